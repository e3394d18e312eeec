"""tools/ablation.py: variant parsing, skipping finished runs, resuming others, the report table."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from istd.engine.config import load_config, save_config
from istd.errors import ConfigError
from istd.models import build_model
from istd.models.hub import save_pretrained

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ablation", REPO / "tools" / "ablation.py")
ab = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ab  # dataclasses look their module up there
_spec.loader.exec_module(ab)

SETS = ["model.name=mim-istd-test"]
EPOCHS = 2


def make_run(root: Path, variant, done: int, val_iou: float = 0.5) -> Path:
    """A work dir of `variant` after `done` of EPOCHS epochs (best/ once one epoch is done)."""
    run = root / variant.name
    cfg = load_config(ab.CONFIG, ab.overrides(variant, EPOCHS, SETS, None))
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(save_config(cfg))
    with open(run / "log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "loss", "lr", "val_iou", "val_niou", "val_pd", "val_fa",
                         "images_per_s", "epoch_s", "wall_time_s"])  # fmt: skip
        for e in range(1, done + 1):
            writer.writerow(
                [e, e, 0.5, 0.05, val_iou, val_iou - 0.1, 0.9, 2e-5, 3.0, 1800.0, 1800.0 * e]
            )
    if done:
        model = build_model("mim-istd-test", scan=variant.scan, inner=variant.inner)
        metrics = {"iou": val_iou, "niou": val_iou - 0.1, "pd": 0.9, "fa": 2.5e-5}
        save_pretrained(model, run / "best", extra={"metrics": metrics, "epoch": done})
    return run


def test_parse_variants() -> None:
    variants = ab.parse_variants(ab.DEFAULT_VARIANTS)
    assert [v.label for v in variants][:2] == ["cross/mamba", "bidirectional/mamba"]
    assert len(variants) == 6 and variants[-1].name == "cross-none"
    for bad in ("cross/lstm", "spiral/mamba", "cross", ""):
        with pytest.raises(ConfigError, match="--variants"):
            ab.parse_variants(bad)
    with pytest.raises(ConfigError, match="known|scan in cross, bidirectional, local, grouped"):
        ab.parse_variants("cross/mamba,diagonal/conv")
    with pytest.raises(ConfigError, match="twice"):
        ab.parse_variants("local/conv, local/conv")
    with pytest.raises(ConfigError, match="model.overrides"):
        ab.overrides(variants[0], 3, ["model.overrides={scan: local}"], None)


def test_finished_runs_are_skipped_and_others_resumed(tmp_path: Path) -> None:
    variants = ab.parse_variants("cross/mamba,local/conv,grouped/none")
    make_run(tmp_path, variants[0], done=EPOCHS)  # finished
    make_run(tmp_path, variants[1], done=1)  # interrupted
    calls: list[list[str]] = []
    reports: list[int] = []  # the report is rewritten after each variant that trained
    ab.train_variants(
        tmp_path, variants, lambda v: ab.overrides(v, EPOCHS, SETS, None), nice=True,
        runner=lambda argv: calls.append(argv) or 0, log=lambda _: None,
        after_each=lambda: reports.append(len(calls)),
    )  # fmt: skip
    assert reports == [1, 2]
    assert [c[c.index("--work-dir") + 1] for c in calls] == [
        str(tmp_path / "local-conv"),
        str(tmp_path / "grouped-none"),
    ]
    for argv in calls:
        assert argv[:3] == ["nice", "-n", "10"] and "--resume" in argv
        assert "train.epochs=2" in argv and "model.name=mim-istd-test" in argv
    assert "model.overrides={scan: grouped, inner: none}" in calls[1]
    # The items of a variant load as a config whose model switches are that variant's.
    cfg = load_config(ab.CONFIG, ab.overrides(variants[2], EPOCHS, SETS, None))
    assert cfg.model.overrides == {"scan": "grouped", "inner": "none"}
    with pytest.raises(ab.IstdError, match="rerun the same command"):
        ab.train_variants(tmp_path, variants[1:2], lambda v: [], runner=lambda a: 3, log=print)


def test_report_only_builds_the_table_from_finished_runs(tmp_path: Path, monkeypatch) -> None:
    root, data = tmp_path / "runs", tmp_path / "NUAA-SIRST"
    variants = ab.parse_variants("cross/mamba,local/conv,grouped/mamba")
    make_run(root, variants[0], done=EPOCHS, val_iou=0.6123)
    make_run(root, variants[1], done=1)  # unfinished: no figures
    run = root / variants[0].name
    sha = ab.rw.sha256_file(run / "best" / "model.safetensors")
    test = {"iou": 0.5811, "niou": 0.5702, "pd": 0.9381, "fa": 1.234e-5, "n_images": 86,
            "n_targets": 97, "threshold": 0.5, "split": "test"}  # fmt: skip
    cache = {"weights_sha256": sha, "data": str(data.resolve()), "limit": None, "metrics": test}
    (run / "test_eval.json").write_text(json.dumps(cache))
    report = tmp_path / "ablation.md"
    args = ["--root", str(root), "--report-only", "--variants", "cross/mamba,local/conv,grouped/mamba",
            "--data", str(data), "--report", str(report), "--latency-size", "64x64",
            "--latency-runs", "1"]  # fmt: skip
    assert ab.main(args) == 0
    text = report.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| cross/mamba"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    params = sum(p.numel() for p in build_model("mim-istd-test").parameters())
    assert cells[1] == f"{params / 1e6:.3f}"
    assert cells[2:10] == [
        "0.6123",
        "0.5123",
        "0.9000",
        "25.00",
        "0.5811",
        "0.5702",
        "0.9381",
        "12.34",
    ]
    assert float(cells[10]) > 0 and cells[11] == "2 (best 2)" and cells[12] == "1.00"
    assert "| local/conv | unfinished: epoch 1 of 2 |" in text
    assert "| grouped/mamba | not run |" in text
    assert f"istd train {ab.CONFIG} --work-dir {run}" in text
    assert "identical except `model.overrides`" in text

    # Latency and test metrics are cached: a rebuild measures and evaluates nothing again.
    def refuse(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr("istd.models.info.time_forward", refuse)
    monkeypatch.setattr("istd.engine.evaluate.run_evaluation", refuse)
    assert ab.main(args) == 0
    assert report.read_text() == text
    assert "Notes:" not in text
    assert ab.main([*args, "--note", "first *one*", "--note", "second"]) == 0
    assert "Notes:\n\n- first *one*\n- second\n" in report.read_text()


def test_cli_errors(tmp_path: Path, capsys) -> None:
    assert ab.main(["--root", str(tmp_path), "--report", str(tmp_path / "r.md")]) == 1
    assert "--epochs" in capsys.readouterr().err
    make_run(tmp_path, ab.Variant("cross", "mamba"), done=1)
    args = ["--root", str(tmp_path), "--variants", "cross/mamba", "--epochs", "5", "--set",
            SETS[0], "--report", str(tmp_path / "r.md")]  # fmt: skip
    assert ab.main(args) == 1  # that run has a 2-epoch budget: refused before any training
    assert "another config" in capsys.readouterr().err
    assert ab.main(["--root", str(tmp_path), "--variants", "cross/rnn", "--report-only"]) == 1
    assert "unknown variant 'cross/rnn'" in capsys.readouterr().err


def test_test_split_evaluated_once(tmp_path: Path, nuaa_sirst: Path, monkeypatch) -> None:
    run = make_run(tmp_path, ab.Variant("local", "mamba"), done=EPOCHS)
    first = ab.eval_test_split(run, nuaa_sirst, 2, "cpu", log=lambda _: None)
    assert first["n_images"] == 2 and first["split"] == "test"
    assert (run / "test_eval" / "metrics.json").is_file()

    def refuse(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr("istd.engine.evaluate.run_evaluation", refuse)
    assert ab.eval_test_split(run, nuaa_sirst, 2, "cpu", log=lambda _: None) == first


def test_report_refuses_a_run_of_another_variant(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path, ab.Variant("cross", "mamba"), done=EPOCHS)
    run.rename(tmp_path / "local-mamba")
    args = ["--root", str(tmp_path), "--variants", "local/mamba", "--report-only",
            "--report", str(tmp_path / "r.md")]  # fmt: skip
    assert ab.main(args) == 1
    assert "holds a cross/mamba model, not local/mamba" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_per_run_command_quotes_the_work_dir(tmp_path: Path) -> None:
    import shlex

    root = tmp_path / "my runs"
    make_run(root, ab.Variant("cross", "mamba"), done=1)
    rows = ab.collect(root, [ab.Variant("cross", "mamba")], data=None, test_limit=None,
                      size=(64, 64), runs=1, threads=1, remeasure=False, device="cpu")  # fmt: skip
    argv = shlex.split(rows["cross/mamba"]["command"])
    assert argv[argv.index("--work-dir") + 1] == str(root / "cross-mamba")
