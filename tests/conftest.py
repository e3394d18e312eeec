"""Shared fixtures: the real datasets in ../shared/datasets, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton fixes interpret mode when it is first imported, which any test may trigger: without a
# GPU, the Triton kernels can only run (slowly, on small shapes) in its interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("ISTD_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def _dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(
            f"real dataset {name} not found at {path} (set ISTD_SHARED_DATASETS to its parent)"
        )
    return path


@pytest.fixture(scope="session")
def nuaa_sirst() -> Path:
    """NUAA-SIRST (SIRST v1): 427 real IR images, official idx_427 split, fixes/ for Misc_111."""
    return _dataset("NUAA-SIRST")


@pytest.fixture(scope="session")
def nudt_sirst() -> Path:
    """NUDT-SIRST: 1,327 synthetic images, 50_50 split (CRLF)."""
    return _dataset("NUDT-SIRST")


@pytest.fixture(scope="session")
def drone_ir() -> Path:
    """Drone-detection-IR: 320 x 256 IR videos with per-frame boxes (labels_csv/)."""
    return _dataset("Drone-detection-IR")
