"""Connected components and matching, the statistics every metric reduces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from istd.metrics.stats import (
    connected_components,
    image_stats,
    match_targets,
    regionprops_components,
)


@settings(max_examples=50, deadline=None)
@given(
    mask=arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.booleans())
)
def test_components_equal_regionprops(mask: np.ndarray) -> None:
    fast, ref = connected_components(mask), regionprops_components(mask)
    np.testing.assert_array_equal(fast.labels, ref.labels)
    np.testing.assert_array_equal(fast.areas, ref.areas)
    # Bit-identical centroids: matching at the 3 px boundary must not depend on the method.
    np.testing.assert_array_equal(fast.centroids, ref.centroids)


def test_components_are_8_connected() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component
    mask[3, 3] = True
    comp = connected_components(mask)
    assert len(comp) == 2
    np.testing.assert_array_equal(comp.areas, [2, 1])
    np.testing.assert_allclose(comp.centroids, [[0.5, 0.5], [3.0, 3.0]])


def test_match_targets_first_is_greedy_in_label_order() -> None:
    targets = np.array([[0.0, 0.0], [0.0, 2.0]])
    objects = np.array([[0.0, 1.0], [0.0, 5.0]])
    assert match_targets(targets, objects, 3.0, "first") == [(0, 0)]
    assert match_targets(targets, objects, 3.0, "optimal") == [(0, 0)]
    assert match_targets(targets, np.zeros((0, 2)), 3.0, "optimal") == []
    with pytest.raises(ValueError, match="matching"):
        match_targets(targets, objects, 3.0, "best")


def test_image_stats_counts() -> None:
    gt = np.zeros((6, 7), bool)
    pred = np.zeros((6, 7), bool)
    gt[1:3, 1:3] = True
    pred[1:3, 2:4] = True
    pred[5, 6] = True
    s = image_stats(pred, gt)
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 3, 2, 35)
    assert (s.n_targets, s.n_objects, s.n_matched, s.fa_pixels) == (1, 2, 1, 1)
    assert (s.height, s.width, s.n_pixels) == (6, 7, 42)
