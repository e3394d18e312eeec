"""Metrics.all_reduce: two gloo ranks, each seeing half of the images, agree with one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from istd.metrics import Metrics


def _images() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(4):
        gt = rng.random((20, 24)) < 0.05
        prob = np.clip(gt * 0.7 + rng.random((20, 24)) * 0.4, 0, 1).astype(np.float32)
        out.append((prob, gt))
    return out


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    store = dist.FileStore(store_path, 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        m = Metrics()
        for prob, gt in _images()[rank::2]:
            m.update(prob, gt)
        m.all_reduce()
        res = m.compute()
        res["roc"] = m.curves()["roc"]["tpr"]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch: ~12 s on 2 shared cores
def test_all_reduce_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    single = Metrics()
    for prob, gt in _images():
        single.update(prob, gt)
    expected = single.compute()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for key in (
            "iou",
            "niou",
            "pd",
            "fa",
            "f1",
            "roc_auc",
            "pd_fa_auc",
            "n_images",
            "n_targets",
        ):
            assert got[key] == expected[key], (rank, key)
        np.testing.assert_array_equal(got["roc"], single.curves()["roc"]["tpr"])


def test_all_reduce_without_process_group_is_a_no_op() -> None:
    assert not dist.is_initialized()
    m = Metrics()
    m.update(np.ones((3, 3), bool), np.ones((3, 3), bool))
    before = m.counts
    m.all_reduce()
    assert m.counts == before


def test_all_reduce_twice_does_not_double_count(tmp_path: Path) -> None:
    # A one-process gloo group: the sums equal the local counts, however often reduced.
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        m = Metrics()
        for prob, gt in _images():
            m.update(prob, gt)
        expected, curves = m.compute(), m.curves()
        m.all_reduce()
        m.all_reduce()
        got = m.compute()
        assert got["n_images"] == expected["n_images"] == 4
        for key in ("iou", "niou", "pd", "fa", "n_targets", "fa_pixels", "roc_auc"):
            assert got[key] == expected[key], key
        np.testing.assert_array_equal(m.curves()["roc"]["tpr"], curves["roc"]["tpr"])
        with pytest.raises(RuntimeError, match="reset"):
            m.update(*_images()[0])  # would mix local counts into global sums
        m.reset()
        m.update(*_images()[0])
        assert m.counts["n_images"] == 1
    finally:
        dist.destroy_process_group()
