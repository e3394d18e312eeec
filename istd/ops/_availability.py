"""Which scan backends can run here, and why not.

Optional imports catch ``ImportError`` only and record the outcome in a named flag, so that a
missing package is reported where a backend is asked for, naming the package to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import torch

try:
    import numba  # noqa: F401

    HAS_NUMBA = True
    NUMBA_IMPORT_ERROR: str | None = None
except ImportError as exc:  # the cpu backend needs numba
    HAS_NUMBA = False
    NUMBA_IMPORT_ERROR = str(exc)

# triton is located, not imported: importing it fixes TRITON_INTERPRET for the whole process
# (its standard library is decorated then) and costs a second at `import istd`. The backend
# modules import it for real, and the dispatcher turns an ImportError there into BackendError.
HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_IMPORT_ERROR: str | None = None if HAS_TRITON else "No module named 'triton'"


def triton_interpreter() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors (slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> list[str]:
    """Scan backends that can run in this process.

    Returns:
        A subset of ``["reference", "cpu", "triton"]``: ``cpu`` when numba imports, ``triton``
        when triton imports and a CUDA device is present (or ``TRITON_INTERPRET=1``).
    """
    names = ["reference"]
    if HAS_NUMBA:
        names.append("cpu")
    if HAS_TRITON and (torch.cuda.is_available() or triton_interpreter()):
        names.append("triton")
    return names


def cpu_kernels_cached() -> bool:
    """Whether the Numba kernels a MiM-ISTD forward runs on the CPU are in the on-disk cache.

    False means the next forward compiles them first (about 30 s, once per machine), which a
    command should say before it looks stalled. Reads where and under which key Numba keeps
    each kernel (the word-path kernel once per stage shape of ``mim-istd``), an internal
    detail: on any surprise the answer is True (no note rather than a wrong one).
    """
    if not HAS_NUMBA:
        return True
    try:
        from istd.ops import scan_grid_cpu, ss2d_grids_cpu

        plain = scan_grid_cpu._dt_proj_softplus_kernel
        if not os.path.exists(plain._cache._cache_file._index_path):
            return False
        # one index file holds every shape's entry, keyed by a hash of the captured shape
        from numba.core.serialize import dumps

        per_shape = [scan_grid_cpu._scan_grid_kernel(16)]  # mim-istd's d_state
        for w in (4, 8, 16, 32):  # mim-istd's word dims: grids of 4 x 4, 4 directions
            per_shape.append(ss2d_grids_cpu._grids_kernel(4, 4, w, 4, 2 * w, 16, -(-w // 16)))
        for kernel in per_shape:
            if not os.path.exists(kernel._cache._cache_file._index_path):
                return False
            cells = tuple(c.cell_contents for c in kernel.py_func.__closure__)
            want = hashlib.sha256(dumps(cells)).hexdigest()
            if not any(key[2][1] == want for key in kernel._cache._cache_file._load_index()):
                return False
        return True
    except Exception:  # noqa: BLE001 (numba internals moved: do not guess)
        return True
