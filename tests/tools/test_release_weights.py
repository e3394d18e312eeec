"""tools/release_weights.py: copying, refusals, evaluation files and the generated model card."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from istd.engine.config import load_config, save_config
from istd.errors import ConfigError, WeightsError
from istd.models import build_model
from istd.models.hub import save_pretrained

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "release_weights", REPO / "tools" / "release_weights.py"
)
rw = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rw  # dataclasses look their module up there
_spec.loader.exec_module(rw)

LOG_HEAD = ["epoch", "step", "loss", "lr", "val_iou", "val_niou", "val_pd", "val_fa",
            "images_per_s", "epoch_s", "wall_time_s"]  # fmt: skip


def make_run(
    path: Path,
    val_iou: float,
    *,
    epochs: int = 3,
    planned: int | None = None,
    seed: int = 0,
    sets: tuple[str, ...] = (),
    selection: dict[str, Any] | None = None,
) -> Path:
    """An `istd train` work dir of the tiny test model after `epochs` of `planned`, untrained;
    `selection` is what `fit` records of a `train.best_window` above 1."""
    sets = ["model.name=mim-istd-test", f"train.epochs={planned or epochs}", *sets]
    cfg = load_config("mim-istd_nuaa-sirst", sets)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(save_config(cfg))
    with open(path / "log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOG_HEAD)
        for e in range(1, epochs + 1):
            iou = val_iou - 0.01 * (epochs - e)
            writer.writerow([e, 4 * e, 0.9 - 0.1 * e, 0.05, iou, iou - 0.02, 0.8, 3.5e-5,
                             2.5, 100.0 + e, 100.0 * e + e * (e + 1) / 2])  # fmt: skip
    import torch

    torch.manual_seed(seed)
    model = build_model("mim-istd-test", norm_mean=(0.4,), norm_std=(0.2,))
    metrics = {"iou": val_iou, "niou": val_iou - 0.02, "pd": 0.8, "fa": 3.5e-5, "n_images": 85.0}
    extra = {
        "dataset": "NUAA-SIRST (train split)", "metrics": metrics, "split": "validation: val",
        "split_sha256": {"train": "a" * 8, "val": "b" * 8}, "epoch": epochs,
        "train_config": cfg.to_dict(),
    }  # fmt: skip
    if selection is not None:
        extra["selection"] = selection
    save_pretrained(model, path / "best", extra=extra)
    return path


def test_release_copies_files_with_modes_and_writes_card(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 0.5123, planned=5)
    root = tmp_path / "weights"
    dst = rw.release(
        run, "tiny-nuaa", weights_root=root, hardware_note="2 test cores",
        notes=["epochs 1-2 used the old augmentation"], log=lambda _: None,
    )  # fmt: skip
    names = {p.name for p in dst.iterdir()}
    assert names == {"model.safetensors", "config.json", "README.md", "log.csv",
                     "train_config.yaml", "release.json", "curves.png"}  # fmt: skip
    for path in dst.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(dst.stat().st_mode) == 0o755
    assert (dst / "model.safetensors").read_bytes() == (run / "best/model.safetensors").read_bytes()
    assert (dst / "train_config.yaml").read_text() == (run / "config.yaml").read_text()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folder left
    rel = json.loads((dst / "release.json").read_text())
    assert rel["final"] is False and rel["weights_sha256"] == rw.sha256_file(
        dst / "model.safetensors"
    )
    card = (root / "README.md").read_text()
    assert "## tiny-nuaa" in card and "intermediate checkpoint" in card
    assert "epoch 3: val IoU 0.5123" in card and "3 done of 5 planned" in card
    assert "0.5023" in card  # the epoch-2 row of log.csv
    assert "![Training curves](tiny-nuaa/curves.png)" in card
    assert "2 test cores" in card and "test split has not been evaluated" in card
    assert "- epochs 1-2 used the old augmentation" in card and rel["notes"] == [
        "epochs 1-2 used the old augmentation"
    ]
    # 0.75 - 0.5123 = 0.2377 short of the IoU target; the numbers come from the files
    assert "0.2377 short" in card
    assert "--set model.name=mim-istd-test --set train.epochs=5" in card
    # A run that reached its planned epochs but is not released as final says so.
    rw.release(make_run(tmp_path / "done", 0.52), "tiny-nuaa", weights_root=root, log=print)
    assert "not released as final** (epoch 3 of 3" in (root / "README.md").read_text()


def test_train_command_reproduces_the_config(tmp_path: Path) -> None:
    items = ["train.epochs=7", "model.overrides={scan: local, inner: conv}", "optim.lr=0.01"]
    cfg = load_config("mim-istd_nuaa-sirst", items).to_dict()
    name, sets = rw.train_command(cfg)
    assert load_config(name, sets).to_dict() == cfg
    assert len(sets) == 3


def test_refuses_worse_checkpoint_unless_forced(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    quiet = {"weights_root": root, "log": lambda _: None}
    rw.release(make_run(tmp_path / "good", 0.6), "w", **quiet)
    before = (root / "w" / "model.safetensors").read_bytes()
    worse = make_run(tmp_path / "worse", 0.4, seed=1)
    with pytest.raises(WeightsError, match="best val IoU 0.6000"):
        rw.release(worse, "w", **quiet)
    assert (root / "w" / "model.safetensors").read_bytes() == before
    rw.release(worse, "w", force=True, **quiet)
    assert (root / "w" / "model.safetensors").read_bytes() != before
    assert "val IoU 0.4000" in (root / "README.md").read_text()


def test_refuses_files_of_25_mb(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 0.5)
    os.truncate(run / "best" / "README.md", rw.MAX_BYTES)  # sparse: instant
    with pytest.raises(WeightsError, match="25 MB"):
        rw.release(run, "big", weights_root=tmp_path / "weights", log=lambda _: None)
    assert not (tmp_path / "weights" / "big").exists()


def test_eval_test_needs_final_and_cli_reports_errors(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run", 0.5)
    with pytest.raises(ConfigError, match="--final"):
        rw.release(run, "w", weights_root=tmp_path / "wr", eval_test=tmp_path)
    code = rw.main(
        ["--run", str(tmp_path / "absent"), "--name", "w", "--weights-root", str(tmp_path)]
    )
    assert code == 1 and "missing" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="weights name"):
        rw.release(run, "../escape", weights_root=tmp_path / "wr")


def test_card_reads_test_and_cross_metrics_and_keeps_them_for_same_weights(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 0.5)
    root = tmp_path / "weights"
    dst = rw.release(run, "w", weights_root=root, log=lambda _: None)
    sha = rw.sha256_file(dst / "model.safetensors")
    facts = {"dataset": "/data/NUAA-SIRST", "split": "test", "weights_sha256": sha}
    test = {"iou": 0.7712, "niou": 0.7601, "pd": 0.9633, "fa": 8.25e-6, "n_images": 86,
            "n_targets": 97, "threshold": 0.5, "facts": facts}  # fmt: skip
    cross = {**test, "iou": 0.3141, "n_images": 663, "facts": {**facts, "dataset": "/data/NUDT"}}
    (dst / "metrics.json").write_text(json.dumps(test))
    (dst / "cross_NUDT-SIRST.json").write_text(json.dumps(cross))
    card = rw.render_card(root)
    assert "| 0.7712 | 0.7601 | 0.9633 | 8.25 |" in card
    assert "| NUDT-SIRST | test | 663 | 0.5 | 0.3141 |" in card
    assert (
        "IoU 0.7712 (target >= 0.75: met)" in card
        and "Pd 0.9633 (target >= 0.97: 0.0067 short)" in card
    )
    assert "IoU -0.0378" in card  # against the paper's 0.809
    assert "Where the test IoU is lost" not in card  # no per_image_test.csv
    (dst / "per_image_test.csv").write_text(
        "image,height,width,targets,detected,objects,false_alarm_objects,false_alarm_pixels,"
        "target_pixels,predicted_pixels,intersection,union,iou\n"
        "big,10,10,1,0,0,0,0,40,0,0,40,0.0\nsmall,10,10,1,1,1,0,0,10,12,10,12,0.8333\n"
    )
    card = rw.render_card(root)
    # 40 + 2 of the 52 union pixels lost; exact on "big": (10 + 40) / (12 + 40)
    assert "| big | 40 | 0 | 0 | 95.2 % | 0.9615 |" in card
    assert "| small | 10 | 12 | 10 | 4.8 % | 0.2000 |" in card
    assert "95 % bootstrap intervals" not in card  # these two rows are not metrics.json's images
    # A second release of the same checkpoint keeps the evaluations of that weights file...
    rw.release(run, "w", weights_root=root, final=True, log=lambda _: None)
    assert (dst / "metrics.json").is_file() and (dst / "cross_NUDT-SIRST.json").is_file()
    assert "**Status: final weights** (epoch 3 of 3 planned)." in (root / "README.md").read_text()
    # ...another checkpoint drops them (they describe other weights).
    rw.release(
        make_run(tmp_path / "run2", 0.55, seed=3), "w", weights_root=root, log=lambda _: None
    )
    assert not (dst / "metrics.json").exists() and not (dst / "cross_NUDT-SIRST.json").exists()


def test_real_test_evaluation(tmp_path: Path, nuaa_sirst: Path) -> None:
    run = make_run(tmp_path / "run", 0.5)
    root = tmp_path / "weights"
    dst = rw.release(run, "w", weights_root=root, final=True, eval_test=nuaa_sirst,
                     cross={"NUAA-again": nuaa_sirst}, eval_limit=2, log=lambda _: None)  # fmt: skip
    metrics = json.loads((dst / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["facts"]["split"] == "test"
    assert metrics["facts"]["weights_sha256"] == rw.sha256_file(dst / "model.safetensors")
    assert metrics["facts"]["source"] == "w" and "curves" in metrics
    assert (dst / "pd_fa.png").read_bytes()[:4] == b"\x89PNG"
    per_image = list(csv.DictReader((dst / "per_image_test.csv").open()))
    assert len(per_image) == 2 and sum(int(r["targets"]) for r in per_image) == metrics["n_targets"]
    assert (dst / "cross_NUAA-again.json").is_file()
    card = (root / "README.md").read_text()
    if any(int(r["union"]) > int(r["intersection"]) for r in per_image):
        assert "Where the test IoU is lost (`per_image_test.csv`)" in card
    assert f"| {metrics['iou']:.4f} | {metrics['niou']:.4f} |" in card
    assert "![Pd-Fa curve](w/pd_fa.png)" in card
    assert "95 % bootstrap intervals over these 2 images" in card
    assert "Only the first 2 images of the split (--eval-limit)" in card
    assert metrics["facts"]["limit"] == 2
    assert yaml.safe_load((dst / "train_config.yaml").read_text())["train"]["epochs"] == 3


def test_eval_tta_adds_its_table_for_the_same_weights_only(
    tmp_path: Path, nuaa_sirst: Path, capsys: pytest.CaptureFixture
) -> None:
    run = make_run(tmp_path / "run", 0.5)
    root = tmp_path / "weights"
    dst = rw.release(run, "w", weights_root=root, final=True, eval_test=nuaa_sirst,
                     eval_limit=2, log=lambda _: None)  # fmt: skip
    plain = (dst / "metrics.json").read_bytes()
    argv = ["--name", "w", "--eval-tta", str(nuaa_sirst), "--eval-limit", "2"]
    assert rw.main([*argv, "--weights-root", str(root)]) == 0
    tta = json.loads((dst / "metrics_tta.json").read_text())
    assert tta["facts"]["tta"] is True and tta["n_images"] == 2
    assert tta["facts"]["weights_sha256"] == rw.sha256_file(dst / "model.safetensors")
    assert (dst / "metrics.json").read_bytes() == plain  # the plain figures are untouched
    card = (root / "README.md").read_text()
    assert "With flip test-time augmentation" in card
    assert f"| {tta['iou']:.4f} | {tta['niou']:.4f} |" in card
    assert "with --tta" in card
    # Another checkpoint under the name: the TTA figures describe other weights, so they go.
    rw.release(make_run(tmp_path / "run2", 0.55, seed=3), "w", weights_root=root,
               log=lambda _: None)  # fmt: skip
    assert not (dst / "metrics_tta.json").exists()
    assert "With flip test-time augmentation" not in (root / "README.md").read_text()
    assert rw.main(["--name", "nope", "--eval-tta", str(nuaa_sirst), "--weights-root",
                    str(root)]) == 1  # fmt: skip
    assert "release weights named 'nope' first" in capsys.readouterr().err


def test_evaluation_redone_only_for_another_dataset_or_limit(
    tmp_path: Path, nuaa_sirst: Path, monkeypatch
) -> None:
    run = make_run(tmp_path / "run", 0.5)
    root = tmp_path / "weights"
    opts = {"weights_root": root, "final": True, "log": lambda _: None}
    dst = rw.release(run, "w", eval_test=nuaa_sirst, eval_limit=1, **opts)
    assert json.loads((dst / "metrics.json").read_text())["n_images"] == 1
    (dst / "cross_X.json").write_text(json.dumps({"facts": {"weights_sha256": "other"}}))

    def refuse(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr("istd.engine.evaluate.run_evaluation", refuse)
    rw.release(run, "w", eval_test=nuaa_sirst, eval_limit=1, **opts)  # same file, same request
    assert json.loads((dst / "metrics.json").read_text())["n_images"] == 1
    assert not (dst / "cross_X.json").exists()  # made for other weights: dropped
    with pytest.raises(AssertionError, match="evaluated again"):
        rw.release(run, "w", eval_test=nuaa_sirst, eval_limit=2, **opts)  # another limit
    with pytest.raises(AssertionError, match="evaluated again"):
        rw.release(run, "w", eval_test=nuaa_sirst, eval_limit=1, reeval=True, **opts)
    assert json.loads((dst / "metrics.json").read_text())["n_images"] == 1  # failed: untouched


def test_recovers_weights_left_aside_by_a_killed_release(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    quiet = {"weights_root": root, "log": lambda _: None}
    rw.release(make_run(tmp_path / "good", 0.6), "w", **quiet)
    before = (root / "w" / "model.safetensors").read_bytes()
    (root / "w").rename(root / ".w.old")  # killed between replace_dir_atomic's two renames
    with pytest.raises(WeightsError, match="best val IoU 0.6000"):
        rw.release(make_run(tmp_path / "worse", 0.4, seed=1), "w", **quiet)
    assert (root / "w" / "model.safetensors").read_bytes() == before


def test_refuses_to_replace_a_folder_that_holds_no_weights(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    (root / "w").mkdir(parents=True)
    (root / "w" / "notes.txt").write_text("mine")
    run = make_run(tmp_path / "run", 0.5)
    with pytest.raises(WeightsError, match="not a weights folder"):
        rw.release(run, "w", weights_root=root, force=True, log=lambda _: None)
    assert (root / "w" / "notes.txt").read_text() == "mine"


def test_card_only_of_a_missing_folder_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert rw.main(["--card-only", "--weights-root", str(tmp_path / "absent")]) == 1
    assert "absent" in capsys.readouterr().err


def test_distance_of_a_limited_test_evaluation_says_so(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    dst = rw.release(make_run(tmp_path / "run", 0.5), "w", weights_root=root, log=lambda _: None)
    facts = {"dataset": "/d", "split": "test", "limit": 2}
    test = {"iou": 0.8, "niou": 0.8, "pd": 1.0, "fa": 1e-6, "n_images": 2, "n_targets": 2,
            "threshold": 0.5, "facts": facts}  # fmt: skip
    (dst / "metrics.json").write_text(json.dumps(test))
    assert "On the first 2 images of the test split: IoU 0.8" in rw.render_card(root)


def test_card_recipe_names_the_rescale_and_average_when_used(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    rw.release(make_run(tmp_path / "plain", 0.5), "plain", weights_root=root, log=lambda _: None)
    sets = ("augment.scale_p=0.5", "train.ema_decay=0.99", "augment.pad_fill=mean")
    rw.release(make_run(tmp_path / "scaled", 0.5, sets=sets), "scaled", weights_root=root,
               log=lambda _: None)  # fmt: skip
    card = (root / "README.md").read_text()
    assert card.count("rescale by 0.7-1.5 p 0.5") == 1  # the scaled run's recipe only
    assert card.count("moving average, decay 0.99 per step") == 1
    assert card.count("small frames padded with the normalisation mean") == 1
    assert card.count("head at H/4, input scale 1 |") == 2


def test_card_says_when_best_was_chosen_over_a_window(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    rw.release(make_run(tmp_path / "plain", 0.5), "plain", weights_root=root, log=lambda _: None)
    window = {"metric": "iou", "window": 3, "score": 0.49}
    run = make_run(tmp_path / "w", 0.5, sets=("train.best_window=3",), selection=window)
    rw.release(run, "windowed", weights_root=root, log=lambda _: None)
    card = (root / "README.md").read_text()
    assert card.count("chosen by the mean") == 1  # the plain run's row says nothing of it
    assert "Fa 35.00 x 1e-6; chosen by the mean iou of the last 3 validations (0.4900) |" in card


def test_fine_tuned_runs_document_their_earlier_stages(tmp_path: Path) -> None:
    from istd.engine.checkpoint import write_init_record

    root, quiet = (
        tmp_path / "weights",
        {"weights_root": tmp_path / "weights", "log": lambda _: None},
    )
    rw.release(make_run(tmp_path / "first", 0.5, epochs=4), "w", notes=["made first"], **quiet)
    tuned = make_run(tmp_path / "tuned", 0.6, seed=1, sets=("optim.lr=0.002",))
    write_init_record(tuned, root / "w")  # as `istd train --load-from weights/w` does
    dst = rw.release(tuned, "w", notes=["made second"], **quiet)  # replaces its starting folder
    assert (dst / "stage1_log.csv").read_text() == (tmp_path / "first" / "log.csv").read_text()
    assert (dst / "stage1_train_config.yaml").read_text() == (
        tmp_path / "first" / "config.yaml"
    ).read_text()
    (stage,) = json.loads((dst / "stages.json").read_text())
    assert stage["epoch"] == 4 and stage["val_metrics"]["iou"] == 0.5
    card = (root / "README.md").read_text()
    assert "| stage 1 | 4 epochs of `stage1_train_config.yaml`" in card
    assert "started this run (`--load-from`)" in card
    assert "- Stage 1: made first" in card
    assert "--work-dir WORK1 --set model.name=mim-istd-test" in card  # the first stage's command
    assert "--work-dir WORK --load-from WORK1/best --set" in card
    release = json.loads((dst / "release.json").read_text())
    assert "--load-from WORK1/best" in release["train_command"]

    # tuned again from the released fine-tuned folder: both earlier stages, oldest first
    third = make_run(tmp_path / "third", 0.7, epochs=2, seed=2, sets=("optim.lr=0.001",))
    write_init_record(third, dst)
    dst = rw.release(third, "w", **quiet)
    first, second = json.loads((dst / "stages.json").read_text())
    assert (first["epoch"], second["epoch"]) == (4, 3)
    assert (dst / "stage2_log.csv").read_text() == (tmp_path / "tuned" / "log.csv").read_text()
    assert (dst / "stage1_log.csv").read_text() == (tmp_path / "first" / "log.csv").read_text()
    card = (root / "README.md").read_text()
    assert "started stage 2 (`--load-from`)" in card and "| stage 2 | 3 epochs of" in card
    assert "- Stage 1: made first" in card and "- Stage 2: made second" in card
    assert "--work-dir WORK2 --load-from WORK1/best --set" in card
    assert "--work-dir WORK --load-from WORK2/best --set" in card

    # a run whose starting weights were replaced since cannot name its earlier stages
    again = make_run(tmp_path / "again", 0.8, seed=3)
    write_init_record(again, tmp_path / "first" / "best")
    (tmp_path / "first" / "best" / "model.safetensors").write_bytes(b"other")
    with pytest.raises(WeightsError, match="no longer holds those weights"):
        rw.release(again, "w", **quiet)
    # nor one started from a work dir's fine-tuned, unreleased best/
    chained = make_run(tmp_path / "chained", 0.8, seed=4)
    write_init_record(chained, tmp_path / "third" / "best")
    with pytest.raises(WeightsError, match="release that run first"):
        rw.release(chained, "w", **quiet)


def test_folders_released_before_stages_json_keep_their_first_stage(tmp_path: Path) -> None:
    # the layout of releases before chained stages: init.json, init_log.csv, init_train_config
    from istd.engine.checkpoint import write_init_record

    root, quiet = tmp_path / "weights", {"weights_root": tmp_path / "weights", "log": print}
    first = make_run(tmp_path / "first", 0.5, epochs=4)
    tuned = make_run(tmp_path / "tuned", 0.6, seed=1)
    write_init_record(tuned, first / "best")
    dst = rw.release(tuned, "w", notes=["made second"], **quiet)
    (stage,) = json.loads((dst / "stages.json").read_text())
    (dst / "stages.json").unlink()
    (dst / "stage1_log.csv").rename(dst / "init_log.csv")
    (dst / "stage1_train_config.yaml").rename(dst / "init_train_config.yaml")
    del stage["log"], stage["train_config"]
    (dst / "init.json").write_text(json.dumps(stage))
    card = rw.render_card(root)
    assert "| stage 1 | 4 epochs of `init_train_config.yaml` (0.11 h, log `init_log.csv`)" in card

    third = make_run(tmp_path / "third", 0.7, seed=2)
    write_init_record(third, dst)
    dst = rw.release(third, "w", **quiet)
    assert [s["epoch"] for s in json.loads((dst / "stages.json").read_text())] == [4, 3]
    assert (dst / "stage1_log.csv").read_text() == (first / "log.csv").read_text()
    assert not (dst / "init.json").exists() and not (dst / "init_log.csv").exists()


def test_card_only_adds_notes_to_a_release(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "weights"
    rw.release(make_run(tmp_path / "run", 0.5), "w", weights_root=root, notes=["first"], log=print)
    before = (root / "w" / "model.safetensors").read_bytes()
    args = ["--card-only", "--weights-root", str(root), "--name", "w", "--note", "tried: x"]
    assert rw.main(args) == 0
    assert rw.main(args) == 0  # the same note is not added twice
    assert json.loads((root / "w" / "release.json").read_text())["notes"] == ["first", "tried: x"]
    assert (root / "README.md").read_text().count("tried: x") == 1
    assert (root / "w" / "model.safetensors").read_bytes() == before
    capsys.readouterr()
    assert rw.main(["--card-only", "--weights-root", str(root), "--name", "v", "--note", "n"]) == 1
    assert "'v'" in capsys.readouterr().err


def _two_members(tmp_path: Path) -> Path:
    root = tmp_path / "weights"
    for seed, member in enumerate(("a", "b")):
        run = make_run(tmp_path / f"run-{member}", 0.5 + seed / 100, seed=seed)
        rw.release(run, member, weights_root=root, final=True, log=lambda _: None)
    return root


def test_ensemble_release_evaluates_val_and_test_and_writes_its_section(
    tmp_path: Path, nuaa_sirst: Path
) -> None:
    root = _two_members(tmp_path)
    argv = ["--name", "ab", "--ensemble", "a", "--ensemble", "b@1.25", "--eval-test", str(nuaa_sirst),
            "--eval-limit", "2", "--weights-root", str(root), "--note", "chosen on val"]  # fmt: skip
    assert rw.main(argv) == 0
    dst = root / "ab"
    members = json.loads((dst / "ensemble.json").read_text())["members"]
    assert members == ["a", {"name": "b", "input_scale": 1.25}]
    val, test = (json.loads((dst / f).read_text()) for f in ("metrics_val.json", "metrics.json"))
    assert val["facts"]["split"] == "val" and test["facts"]["split"] == "test"
    assert val["n_images"] == test["n_images"] == 2
    assert test["facts"]["members"] == ["a", "b@1.25"]
    assert test["facts"]["weights"] == "weights/ab/ensemble.json"
    assert test["facts"]["weights_sha256"] == rw.weights_sha256(dst) is not None
    record = json.loads((dst / "release.json").read_text())
    assert record["members"]["a"] == rw.sha256_file(root / "a" / "model.safetensors")
    assert record["members"]["b@1.25"] == rw.sha256_file(root / "b" / "model.safetensors")
    assert (dst / "pd_fa.png").is_file() and (dst / "per_image_test.csv").is_file()
    card = (root / "README.md").read_text()
    section = card[card.index("## ab") :]
    assert "**An ensemble** of [`a`](#a) and [`b@1.25`](#b)" in section
    assert "| member | `b@1.25` (run at input scale 1.25), model.safetensors" in section
    assert f"| ab | {val['iou']:.4f} | {val['niou']:.4f} |" in section
    assert "| a | 0.5000 | 0.4800 | 0.8000 | 35.00 |" in section  # a's best val checkpoint
    assert f"| {test['iou']:.4f} | {test['niou']:.4f} |" in section
    assert "- chosen on val" in section and "![Pd-Fa curve](ab/pd_fa.png)" in section


def test_ensemble_release_refuses_bad_members(tmp_path: Path, capsys) -> None:
    root = _two_members(tmp_path)
    with pytest.raises(ConfigError, match="two or more different members"):
        rw.release_ensemble("ab", ["a", "a"], tmp_path, weights_root=root)
    with pytest.raises(ConfigError, match="two or more different members"):
        rw.release_ensemble("ab", ["a@1.5", "a@1.50"], tmp_path, weights_root=root)
    for bad in ("b@0.1", "b@", "b@x", "b@nan"):
        with pytest.raises(ConfigError, match=f"'{bad}': the scale after '@'"):
            rw.release_ensemble("ab", ["a", bad], tmp_path, weights_root=root)
    with pytest.raises(WeightsError, match="not a released weights folder"):
        rw.release_ensemble("ab", ["a", "nope"], tmp_path, weights_root=root)
    with pytest.raises(ConfigError, match="ensemble member"):
        rw.release_ensemble("ab", ["a", "../b"], tmp_path, weights_root=root)
    with pytest.raises(WeightsError, match="not an ensemble folder"):
        rw.release_ensemble("a", ["a", "b"], tmp_path, weights_root=root)
    with pytest.raises(SystemExit):  # --ensemble without --eval-test
        rw.main(["--name", "ab", "--ensemble", "a", "--ensemble", "b"])
    assert "--ensemble takes --name and --eval-test" in capsys.readouterr().err
    config = json.loads((root / "b" / "config.json").read_text())
    config["extra"]["split_sha256"]["val"] = "c" * 8
    (root / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="not validated on the same ids"):
        rw.release_ensemble("ab", ["a", "b"], tmp_path, weights_root=root)
    assert not (root / "ab").exists()
    assert (root / "a" / "model.safetensors").is_file()  # the member refused as a name is intact
