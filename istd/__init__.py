"""istd: infrared small-target detection with MiM-ISTD (Mamba-in-Mamba).

The public API is small; heavy modules load on first use so that `istd --help` stays fast.

Example:
    >>> import istd
    >>> model = istd.build_model("mim-istd")
    >>> predictor = istd.Predictor()          # default weights
    >>> result = predictor(image)             # HxW array -> probability, mask, detections
"""

import os
from importlib import import_module
from typing import Any

# Torch's and Numba's OpenMP pools alternate on the CPU scan path. Sleeping idle workers are the
# safe default: spinning ones (GOMP_SPINCOUNT) train and predict 1.3-1.45x faster on an idle
# machine but 3-8x slower when another job shares the cores (README, "Threads"). Must be set
# before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# LLVM -O2 instead of Numba's default -O3 for the scan kernels compiled on first use: about 2 s
# less of the first call's ~11 s, with no measurable change in kernel speed (tools/bench_scan.py).
os.environ.setdefault("NUMBA_OPT", "2")
if os.environ.get("ISTD_KEEP_MALLOC") != "1":  # reuse freed activation buffers (see _malloc)
    from istd._malloc import keep_freed_memory

    keep_freed_memory()

__version__ = "0.1.0"

_LAZY = {
    "build_model": "istd.models",
    "list_models": "istd.models",
    "from_pretrained": "istd.models",
    "Predictor": "istd.engine.predict",
    "Metrics": "istd.metrics",
    "selective_scan": "istd.ops",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'istd' has no attribute {name!r}")
