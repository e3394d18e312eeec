"""`istd.engine.selection`: the score each validation is chosen by."""

from __future__ import annotations

import pytest

from istd.engine.selection import selection_scores, trailing_mean

# A lone high validation (the 2nd) before a stretch that holds up (the 5th to 7th) and a drop.
NOISY = [0.60, 0.80, 0.62, 0.70, 0.74, 0.75, 0.74, 0.66]


def test_window_one_is_the_validation_itself() -> None:
    assert selection_scores(NOISY, 1) == NOISY


def test_window_scores_the_stretch_ending_at_each_validation() -> None:
    scores = selection_scores(NOISY, 3)
    assert scores[:2] == pytest.approx([0.60, 0.70])  # fewer than 3 so far: all of them
    assert scores[2] == pytest.approx((0.60 + 0.80 + 0.62) / 3)
    assert scores[6] == pytest.approx((0.74 + 0.75 + 0.74) / 3)
    # The lone peak wins alone; with a window the end of the steady stretch wins.
    assert max(range(len(NOISY)), key=NOISY.__getitem__) == 1
    assert max(range(len(scores)), key=scores.__getitem__) == 6


@pytest.mark.parametrize(("values", "window"), [([], 3), ([0.5], 0)])
def test_bad_input_is_refused(values: list[float], window: int) -> None:
    with pytest.raises(ValueError):
        trailing_mean(values, window)
