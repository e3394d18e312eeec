"""Which validation `best/` holds: the one rule shared by `fit` and `istd runs`.

A single validation on a small split is noisy (85 NUAA-SIRST images move IoU by about 0.015
between neighbouring epochs), so taking the highest of a few hundred flatters the run.
`train.best_window` scores each validation by the mean of the last `window` validations up to
it; the checkpoint published is the one at the end of the best such stretch.
"""

from __future__ import annotations

from collections.abc import Sequence


def trailing_mean(values: Sequence[float], window: int) -> float:
    """The mean of the last `window` values (of all of them while there are fewer).

    Raises:
        ValueError: no values, or a window below 1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not values:
        raise ValueError("no values to average")
    recent = list(values)[-window:]
    return sum(recent) / len(recent)


def selection_scores(values: Sequence[float], window: int) -> list[float]:
    """Each validation's score, in order: the trailing mean of the window ending at it."""
    return [trailing_mean(values[: i + 1], window) for i in range(len(values))]
