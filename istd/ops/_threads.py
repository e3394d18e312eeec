"""One thread count for torch and the Numba kernels: ``torch.set_num_threads`` governs both."""

from __future__ import annotations

import numba
import torch


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
