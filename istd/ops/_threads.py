"""One thread count for torch and the Numba kernels: ``torch.set_num_threads`` governs both."""

from __future__ import annotations

import os

import numba
import torch


def openmp_wait() -> str:
    """How this process's OpenMP workers wait between parallel regions, for benchmark headers.

    The runtimes read these variables when they load (torch's with torch), so they describe the
    process only if ``istd`` was imported before torch, as its CLI and tools do.
    """
    policy = os.environ.get("OMP_WAIT_POLICY", "unset (spins)")
    return f"OMP_WAIT_POLICY={policy}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}"


def sync_numba_threads() -> None:
    """Give the Numba kernels torch's thread count, leaving torch's own count as it was.

    Starting Numba's OpenMP pool (on its first use) resets the OpenMP thread count that torch
    shares, so a process that set 1 thread found itself on all cores after the first scan;
    torch's count is read first and put back.
    """
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
