"""`istd train` CLI: options reach `fit`, errors become one red line, a tiny real run works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from istd.cli import app

runner = CliRunner()


def test_help_lists_the_interface() -> None:
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for word in ("--set", "--work-dir", "--resume", "--load-from", "--amp", "--device", "--quiet"):
        assert word in result.output


def test_options_are_passed_to_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import istd.engine.train as train_mod

    seen = {}

    def fake_fit(config, work_dir, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(config=config, work_dir=work_dir, **kwargs)
        return train_mod.FitResult(Path(work_dir), 1, 2, 1, 0.5, [])

    monkeypatch.setattr(train_mod, "fit", fake_fit)
    args = [
        "train",
        "mim-istd_nuaa-sirst",
        "--work-dir",
        str(tmp_path / "w"),
        "--set",
        "optim.lr=0.01",
    ]
    args += ["--set", "train.epochs=3", "--amp", "--quiet", "--resume"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["config"] == "mim-istd_nuaa-sirst"
    assert seen["overrides"] == ["optim.lr=0.01", "train.epochs=3"]
    assert seen["amp"] is True and seen["resume"] is True and seen["device"] == "cpu"
    assert "best val 0.5000 at epoch 1" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-config"], "unknown config"),
        (["mim-istd_nuaa-sirst", "--set", "optim.lrr=1"], "optim.lrr"),
        (["mim-istd_nuaa-sirst", "--set", "train.epochs=x"], "train.epochs"),
        (["mim-istd_nuaa-sirst", "--set", "data.root=/nonexistent/x"], "not found"),
    ],
)
def test_errors_are_one_red_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", *args, "--work-dir", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_device_choice_is_checked(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "mim-istd_nuaa-sirst", "--work-dir", str(tmp_path), "--device", "tpu"]
    )
    assert result.exit_code == 2


def test_tiny_real_run(nuaa_sirst: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    sets = [
        f"data.root={nuaa_sirst}",
        "model.name=mim-istd-test",
        "data.limit=2",
        "data.val_limit=1",
    ]
    sets += ["augment.crop_size=32", "train.epochs=1", "train.batch_size=2", "train.threads=1"]
    args = ["train", "mim-istd_nuaa-sirst", "--work-dir", str(work), "--quiet"]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1: loss" in result.output and "done: 1 epochs" in result.output
    assert (work / "best" / "model.safetensors").is_file()
    # Fa in the field's unit (a raw fraction printed as 0.0000 whatever it was); Rich may wrap
    assert re.search(r"val iou [\d.]+ niou [\d.]+ pd\s+[\d.]+\s+fa\s+[\d.]+e-6", result.output)
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already holds a run" in again.output
    # fine-tuning reports the starting weights' validation as epoch 0, before any step
    tuned = [a if a != str(work) else str(tmp_path / "tuned") for a in args]
    tuned = runner.invoke(app, [*tuned, "--load-from", str(work / "best")])
    assert tuned.exit_code == 0, tuned.output
    assert re.search(r"epoch 0 \(starting weights\): [\d.]+ s\s+val\s+iou", tuned.output)
