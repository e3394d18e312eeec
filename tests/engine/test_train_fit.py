"""`fit` end to end on tiny runs: work-dir contents, refusals, NaN stop, AMP scan dtype, EMA."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from istd.engine import train as train_module
from istd.engine.checkpoint import load_checkpoint
from istd.engine.config import load_config
from istd.engine.optim import build_scheduler
from istd.engine.runs import read_run
from istd.engine.train import DivergenceError, Reporter, fit
from istd.engine.train_data import split_samples
from istd.errors import ConfigError, DataError
from istd.models import from_pretrained

TINY = [
    "model.name=mim-istd-test",
    "augment.crop_size=32",
    "train.epochs=2",
    "train.batch_size=2",
    "train.threads=1",
]


def make_dataset(
    root: Path, n: int = 8, size: tuple[int, int] = (40, 48), seed: int = 0, n_val: int = 2
) -> Path:
    """A DNANet-layout folder: noisy frames, one bright 3 x 3 target each, 50_50/{train,val,test}:
    the first half trains, the next `n_val` validate, the rest test."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "50_50").mkdir()
    ids = [f"{i:04d}" for i in range(n)]
    for name in ids:
        image = rng.normal(60, 10, size).clip(0, 255).astype(np.uint8)
        mask = np.zeros(size, np.uint8)
        y, x = rng.integers(4, size[0] - 4), rng.integers(4, size[1] - 4)
        image[y - 1 : y + 2, x - 1 : x + 2] = 230
        mask[y - 1 : y + 2, x - 1 : x + 2] = 255
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
    half = n // 2
    (root / "50_50" / "train.txt").write_text("\n".join(ids[:half]) + "\n")
    (root / "50_50" / "val.txt").write_text("\n".join(ids[half : half + n_val]) + "\n")
    (root / "50_50" / "test.txt").write_text("\n".join(ids[half + n_val :]) + "\n")
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "synth")


def tiny(root: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", *TINY, *extra]


def test_fit_writes_config_log_checkpoint_and_best(synthetic: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    result = fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic))
    assert result.epochs == 2 and result.step == 4  # 4 train images, batch 2
    names = ["best", "config.yaml", "curves.png", "last.ckpt", "log.csv"]
    assert sorted(p.name for p in work.iterdir()) == names
    rows = list(csv.DictReader((work / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for col in (
        "step",
        "loss",
        "lr",
        "val_iou",
        "val_niou",
        "val_pd",
        "val_fa",
        "images_per_s",
        "wall_time_s",
    ):
        assert rows[-1][col] != "", col
    record = load_checkpoint(work / "last.ckpt")
    assert record["epoch"] == 2 and record["step"] == 4
    assert {"python", "numpy", "torch"} <= set(record["rng"])
    best = from_pretrained(work / "best")
    meta = json.loads((work / "best" / "config.json").read_text())
    extra = meta["extra"]
    assert extra["epoch"] == result.best_epoch
    assert set(extra["split_sha256"]) == {"train", "val"}
    assert "iou" in extra["metrics"]
    # Normalisation measured on the 4 training images only, saved with the weights.
    train, _ = split_samples(load_config("mim-istd_nuaa-sirst", tiny(synthetic)))
    pixels = np.concatenate(
        [cv2.imread(str(s.image_path), cv2.IMREAD_GRAYSCALE).ravel() / 255.0 for s in train]
    )
    assert meta["config"]["norm_mean"][0] == pytest.approx(pixels.mean(), rel=1e-6)
    assert best.config.norm_std[0] == pytest.approx(pixels.std(), rel=1e-6)
    # The validation split (not test) was used.
    assert len(_) == 2 and all(s.id in ("0004", "0005") for s in _)
    # `istd runs` names the epoch that fit saved to best/.
    assert read_run(work).summary()["best_epoch"] == result.best_epoch


@pytest.mark.parametrize(("window", "expected"), [(1, 2), (2, 5)])
def test_best_window_publishes_the_end_of_the_best_stretch(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int, expected: int
) -> None:
    """Scripted validation IoUs: a lone peak at epoch 2, a steadier stretch at epochs 4-5."""
    ious = iter([0.5, 0.9, 0.4, 0.8, 0.85, 0.3])
    real = train_module.validate

    def scripted(*args: Any) -> dict[str, float]:
        return {**real(*args), "iou": next(ious)}

    monkeypatch.setattr(train_module, "validate", scripted)
    work = tmp_path / "run"
    overrides = ["train.epochs=6", "train.val_every=1", f"train.best_window={window}"]
    result = fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, *overrides))
    assert result.best_epoch == expected
    selection = json.loads((work / "best" / "config.json").read_text())["extra"]["selection"]
    assert selection == {
        "metric": "iou",
        "window": window,
        "score": pytest.approx(result.best_value),
    }
    assert result.best_value == pytest.approx(0.9 if window == 1 else 0.825)
    # `istd runs` reads the same choice back from log.csv and config.yaml.
    assert read_run(work).summary()["best_epoch"] == expected


def test_same_seed_same_weights_different_seed_differs(synthetic: Path, tmp_path: Path) -> None:
    a = fit("mim-istd_nuaa-sirst", tmp_path / "a", overrides=tiny(synthetic, "train.epochs=1"))
    b = fit("mim-istd_nuaa-sirst", tmp_path / "b", overrides=tiny(synthetic, "train.epochs=1"))
    c = fit(
        "mim-istd_nuaa-sirst",
        tmp_path / "c",
        overrides=tiny(synthetic, "train.epochs=1", "train.seed=7"),
    )
    wa, wb, wc = (load_checkpoint(r.work_dir / "last.ckpt")["model"] for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_refuses_existing_run_and_bad_resume(synthetic: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "train.epochs=1"))
    before = (work / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "train.epochs=1"))
    with pytest.raises(ConfigError, match="optim.lr"):
        fit(
            "mim-istd_nuaa-sirst",
            work,
            overrides=tiny(synthetic, "train.epochs=1", "optim.lr=0.1"),
            resume=True,
        )
    assert (work / "last.ckpt").read_bytes() == before
    with pytest.raises(ConfigError, match="no config.yaml"):
        fit(None, tmp_path / "empty", resume=True)


def test_run_saved_before_optim_decay_resumes_decaying_everything(
    synthetic: Path, tmp_path: Path
) -> None:
    # config.yaml files written before optim.decay existed: those runs decayed every parameter
    # (one optimiser group); their last.ckpt must load, and go on as it started
    work = tmp_path / "run"
    fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "train.epochs=1", "optim.decay=all"))
    saved = yaml.safe_load((work / "config.yaml").read_text())
    del saved["optim"]["decay"]
    saved["train"]["epochs"] = 2
    (work / "config.yaml").write_text(yaml.safe_dump(saved))
    result = fit(None, work, resume=True)  # two parameter groups would not load the state
    assert result.epochs == 2
    assert len(load_checkpoint(work / "last.ckpt")["optimizer"]["param_groups"]) == 1


def test_resume_before_first_checkpoint_starts_fresh(synthetic: Path, tmp_path: Path) -> None:
    full = fit(
        "mim-istd_nuaa-sirst", tmp_path / "full", overrides=tiny(synthetic, "train.epochs=3")
    )
    # A run killed before its first last.ckpt leaves config.yaml at most: --resume starts over.
    part = tmp_path / "part"
    fit("mim-istd_nuaa-sirst", part, overrides=tiny(synthetic, "train.epochs=3"), resume=True)
    assert load_checkpoint(part / "last.ckpt")["epoch"] == 3
    wa = load_checkpoint(full.work_dir / "last.ckpt")["model"]
    wb = load_checkpoint(part / "last.ckpt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import istd.engine.train as train_mod

    real = train_mod.build_loss
    calls = {"n": 0}

    def poisoned(cfg):  # type: ignore[no-untyped-def]
        loss_fn = real(cfg)

        def fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            loss = loss_fn(logits, target)
            return loss * float("nan") if calls["n"] == 3 else loss  # first step of epoch 2

        return fn

    monkeypatch.setattr(train_mod, "build_loss", poisoned)
    work = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"epoch 2 step 1: loss is nan"):
        fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "train.epochs=3"))
    record = load_checkpoint(work / "last.ckpt")
    assert record["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in record["model"].values() if v.is_floating_point())
    assert len(list(csv.DictReader((work / "log.csv").open()))) == 1
    assert not list(work.glob(".*"))  # no temp files left behind


def test_amp_runs_scan_in_float32(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import istd.models.layers.ss2d as ss2d

    real = ss2d.selective_scan
    seen: list[tuple[torch.dtype, bool]] = []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        y = real(*args, **kwargs)
        # The same inputs outside autocast must give the same output: the scan ignores autocast.
        with torch.autocast("cpu", enabled=False):
            ref = real(*args, **kwargs)
        seen.append((y.dtype, torch.equal(y, ref)))
        return y

    monkeypatch.setattr(ss2d, "selective_scan", spy)
    fit(
        "mim-istd_nuaa-sirst",
        tmp_path / "amp",
        overrides=tiny(synthetic, "train.epochs=1"),
        amp=True,
    )
    assert seen and all(dtype == torch.float32 and same for dtype, same in seen)


def _learning_rates(warmup_epochs: int, epochs: int, steps: int) -> list[float]:
    """The learning rate of each step of a run of `epochs` epochs of 2 steps, lr 0.05."""
    from istd.engine.config import OptimConfig, ScheduleConfig
    from istd.engine.optim import build_optimizer

    opt = build_optimizer(torch.nn.Linear(1, 1), OptimConfig(lr=0.05))
    schedule = ScheduleConfig(warmup_epochs=warmup_epochs, min_lr=1e-5)
    sched = build_scheduler(opt, schedule, 0.05, epochs=epochs, steps_per_epoch=2)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return [*lrs, sched.get_last_lr()[0]]


def test_cosine_schedule_and_warmup() -> None:
    lrs = _learning_rates(warmup_epochs=1, epochs=3, steps=6)
    assert lrs[0] == pytest.approx(0.025) and lrs[1] == pytest.approx(0.05)
    assert lrs[2] == pytest.approx(0.05) and lrs[-2] < lrs[3] < lrs[2]
    assert lrs[-1] == pytest.approx(1e-5)


def test_weight_decay_spares_biases_norms_and_scan_parameters() -> None:
    from istd.engine.config import OptimConfig
    from istd.engine.optim import build_optimizer
    from istd.models.layers.ss2d import SS2D

    block = SS2D(8)
    opt = build_optimizer(block, OptimConfig(weight_decay=1e-4))
    decayed, kept = ({id(p) for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    names = {id(p): n for n, p in block.named_parameters()}
    assert {names[i] for i in kept} >= {"A_log", "D", "dt_proj_bias", "out_norm.weight"}
    assert {"in_proj.weight", "out_proj.weight", "conv.weight"} <= {names[i] for i in decayed}
    assert len(decayed) + len(kept) == len(names)
    everything = build_optimizer(block, OptimConfig(weight_decay=1e-4, decay="all"))
    assert len(everything.param_groups) == 1


def test_warmup_is_cut_to_leave_one_epoch() -> None:
    # the shipped 2-epoch warm-up on a 2-epoch run: one epoch of warm-up, then the cosine
    lrs = _learning_rates(warmup_epochs=2, epochs=2, steps=4)
    assert lrs[:3] == pytest.approx([0.025, 0.05, 0.05])
    assert lrs[3] < 0.05


def test_missing_dataset_and_unknown_split(tmp_path: Path, synthetic: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        fit(
            "mim-istd_nuaa-sirst",
            tmp_path / "a",
            overrides=[*TINY, f"data.root={tmp_path / 'none'}"],
        )
    with pytest.raises(DataError, match="nope"):
        fit("mim-istd_nuaa-sirst", tmp_path / "b", overrides=tiny(synthetic, "data.val_split=nope"))


def test_held_out_validation_without_val_split(synthetic: Path) -> None:
    cfg = load_config("mim-istd_nudt-sirst", tiny(synthetic))
    train, val = split_samples(cfg)
    assert len(train) == 3 and len(val) == 1  # ceil(10 % of 4)
    assert not {s.id for s in train} & {s.id for s in val}
    assert split_samples(cfg) == (train, val)


def test_real_nuaa_two_tiny_epochs(nuaa_sirst: Path, tmp_path: Path) -> None:
    result = fit(
        "mim-istd_nuaa-sirst",
        tmp_path / "nuaa",
        overrides=[f"data.root={nuaa_sirst}", *TINY, "data.limit=4", "data.val_limit=2"],
    )
    assert result.epochs == 2
    extra = json.loads((tmp_path / "nuaa" / "best" / "config.json").read_text())["extra"]
    assert extra["metrics"]["n_images"] == 2


def test_load_from_initialises_the_network(synthetic: Path, tmp_path: Path) -> None:
    from istd.engine.evaluate import sha256_file
    from istd.errors import WeightsError

    first = fit("mim-istd_nuaa-sirst", tmp_path / "a", overrides=tiny(synthetic, "train.epochs=1"))
    start = load_file(first.work_dir / "best" / "model.safetensors")
    # A learning rate of ~0 keeps the loaded parameters: the run must start from them.
    frozen = tiny(synthetic, "train.epochs=1", "optim.lr=1e-12", "schedule.min_lr=0")
    second = fit(
        "mim-istd_nuaa-sirst", tmp_path / "b", overrides=frozen, load_from=first.work_dir / "best"
    )
    after = load_checkpoint(second.work_dir / "last.ckpt")["model"]
    names = [k for k in start if "running" not in k and "num_batches" not in k]
    assert max((after[k] - start[k]).abs().max().item() for k in names) < 1e-6
    # the run records where it started, for the release's model card
    init = json.loads((second.work_dir / "init.json").read_text())
    assert init["folder"] == str((first.work_dir / "best").resolve())
    assert init["weights_sha256"] == sha256_file(first.work_dir / "best" / "model.safetensors")
    assert init["epoch"] == 1 and "iou" in init["val_metrics"]
    assert not (first.work_dir / "init.json").exists()
    # epoch 0 validates the starting weights; unchanged weights do not displace them in best/
    log = pd.read_csv(second.work_dir / "log.csv")
    assert list(log["epoch"]) == [0, 1] and pd.isna(log["loss"][0])
    assert log["val_iou"][0] == pytest.approx(init["val_metrics"]["iou"])
    assert second.best_epoch == 0
    best = load_file(second.work_dir / "best" / "model.safetensors")
    assert all(torch.equal(best[k], start[k]) for k in start)
    assert (second.work_dir / "curves.png").is_file()
    with pytest.raises(WeightsError):
        fit(
            "mim-istd_nuaa-sirst",
            tmp_path / "c",
            overrides=tiny(synthetic),
            load_from=tmp_path / "a",
        )


def test_dataloader_workers_do_not_change_the_result(synthetic: Path, tmp_path: Path) -> None:
    # Order from (seed, epoch), augmentation from (seed, epoch, index): workers change nothing.
    a = fit("mim-istd_nuaa-sirst", tmp_path / "w0", overrides=tiny(synthetic, "train.epochs=1"))
    b = fit(
        "mim-istd_nuaa-sirst",
        tmp_path / "w2",
        overrides=tiny(synthetic, "train.epochs=1", "data.num_workers=2"),
    )
    wa, wb = (load_checkpoint(r.work_dir / "last.ckpt")["model"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_thread_count_holds_for_every_step(synthetic: Path, tmp_path: Path) -> None:
    # Numba's pool, started lazily by the first CPU scan, used to reset torch to all cores.
    seen: list[int] = []

    class Spy(Reporter):
        def step(self, loss: float, images: int) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    fit("mim-istd_nuaa-sirst", tmp_path / "t", overrides=tiny(synthetic), reporter=Spy())
    assert seen == [1, 1, 1, 1]
    assert torch.get_num_threads() == before


def test_failed_start_leaves_no_run_behind(synthetic: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "model.name=tophat"))
    with pytest.raises(ConfigError, match="bogus"):
        fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "model.overrides={bogus: 1}"))
    assert not work.exists() or not list(work.iterdir())
    # The corrected command then starts normally in the same folder.
    assert fit("mim-istd_nuaa-sirst", work, overrides=tiny(synthetic, "train.epochs=1")).epochs == 1


@pytest.mark.slow
def test_default_recipe_learns_synthetic_targets(tmp_path: Path) -> None:
    # 20 training frames, bright 3 x 3 targets on noise: AdaGrad + SoftIoU (the shipped recipe)
    # must find them on 8 validation frames within 60 short epochs. Batch 6: at 32 px the
    # deepest maps are 1 x 1, and BatchNorm's running statistics (used at validation) track the
    # batch statistics of 4 samples too poorly for eval-mode outputs to match training.
    # With 2 validation frames the outcome hung on luck: a last-bit change of exp (4e-7)
    # turned IoU 0.79 into 0.0 at this seed, and other seeds stall on this toy with either
    # exp; 8 frames and a bar the learning runs clear (0.27 to 0.48 over seeds) keep it honest.
    root = make_dataset(tmp_path / "data", n=40, size=(32, 32), n_val=8)
    result = fit(
        "mim-istd_nuaa-sirst",
        tmp_path / "run",
        overrides=tiny(root, "train.epochs=60", "train.batch_size=6"),
    )
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"] - 0.1
    assert result.best_value is not None and result.best_value > 0.2  # validation IoU
    best = next(h for h in result.history if h["epoch"] == result.best_epoch)
    assert best["val_pd"] >= 0.5 and best["val_fa"] < 1e-3


# ---- train.ema_decay: a moving average of the weights is validated, published, resumed

# Only the last of 3 epochs is validated, so best/ is the state at the end of the run.
EMA = ["train.epochs=3", "train.val_every=3", "train.ema_decay=0.6"]


def _average(record: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in record["ema"].items() if k != "n_averaged"}


def test_best_holds_the_average_and_training_is_unchanged(synthetic: Path, tmp_path: Path) -> None:
    plain = fit("mim-istd_nuaa-sirst", tmp_path / "plain", overrides=tiny(synthetic, *EMA[:2]))
    ema = fit("mim-istd_nuaa-sirst", tmp_path / "ema", overrides=tiny(synthetic, *EMA))
    a = load_checkpoint(plain.work_dir / "last.ckpt")
    b = load_checkpoint(ema.work_dir / "last.ckpt")
    # The average only watches: the trained weights are those of a run without it.
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "ema" not in a
    assert int(b["ema"]["n_averaged"]) == b["step"] == 6  # one update per optimiser step
    average = _average(b)
    best = load_file(ema.work_dir / "best" / "model.safetensors")
    assert set(best) == set(average)
    assert all(torch.equal(best[k], average[k]) for k in best)
    floats = [k for k in best if best[k].is_floating_point()]
    assert any(not torch.equal(average[k], b["model"][k]) for k in floats)


def test_killed_run_resumes_its_average(synthetic: Path, tmp_path: Path) -> None:
    full = fit("mim-istd_nuaa-sirst", tmp_path / "full", overrides=tiny(synthetic, *EMA))

    class Kill(Reporter):
        def epoch_end(self, row: dict[str, Any]) -> None:  # after last.ckpt is written
            if row["epoch"] == 2:
                raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit("mim-istd_nuaa-sirst", cut, overrides=tiny(synthetic, *EMA), reporter=Kill())
    assert load_checkpoint(cut / "last.ckpt")["epoch"] == 2
    fit(None, cut, resume=True)
    a, b = (
        _average(load_checkpoint(full.work_dir / "last.ckpt")),
        _average(load_checkpoint(cut / "last.ckpt")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("decay", ["0", "1.0", "1.5", "nan"])
def test_decay_outside_zero_one_is_refused(decay: str) -> None:
    with pytest.raises(ConfigError, match="train.ema_decay"):
        load_config("mim-istd_nuaa-sirst", [f"train.ema_decay={decay}"]).validate()
