"""Scan-order and inner-path ablation of MiM-ISTD on NUAA-SIRST (issue 8), trained and reported.

Every variant `scan/inner` (scan: cross, bidirectional, local, grouped; inner: mamba, conv,
none) trains with the same shipped config, `mim-istd_nuaa-sirst`, and the same overrides (the
reduced budget), differing only in `model.overrides`, each in its own work dir ROOT/<scan>-<inner>.
Variants run one after another as `istd train ... --resume` subprocesses: a finished run is
skipped, an interrupted one continues where its last.ckpt left it, and a work dir whose saved
config differs from the requested one is refused by `istd train` (so budgets stay equal).

Then, for every finished variant, the report reads the validation metrics of its best
checkpoint (best/config.json), evaluates the test split once (cached as ROOT/<variant>/
test_eval.json, keyed by the weights file's sha256, plus the full `istd eval` report in
test_eval/), counts parameters and measures CPU latency with `istd.models.info.model_info`
(median of --latency-runs forwards, cached in latency.json), and writes the markdown table to
--report atomically.

Usage:
    python tools/ablation.py --root /work/train_runs/ablation --epochs 20 [--nice]
        [--variants cross/mamba,local/mamba] [--data ROOT] [--set k=v ...] [--report docs/ablation.md]
    python tools/ablation.py --root /work/train_runs/ablation --report-only
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling release tool
import release_weights as rw  # noqa: E402
import weights_card  # noqa: E402

from istd._atomic import write_atomic  # noqa: E402
from istd.errors import ConfigError, IstdError  # noqa: E402
from istd.models.config import INNERS, SCANS  # noqa: E402

CONFIG = "mim-istd_nuaa-sirst"
DEFAULT_VARIANTS = "cross/mamba,bidirectional/mamba,local/mamba,grouped/mamba,cross/conv,cross/none"
COMMAND_FILE = "ablation_command.json"  # in ROOT: the invocation that trained the runs


@dataclass(frozen=True)
class Variant:
    """One ablation cell: the scan order of every SS2D and the inner (word) path."""

    scan: str
    inner: str

    @property
    def name(self) -> str:
        """Work dir name under the root, e.g. `local-mamba`."""
        return f"{self.scan}-{self.inner}"

    @property
    def label(self) -> str:
        """Table label, e.g. `local/mamba`."""
        return f"{self.scan}/{self.inner}"

    def override(self) -> str:
        """The `--set` item that selects this variant."""
        return f"model.overrides={{scan: {self.scan}, inner: {self.inner}}}"


def parse_variants(text: str) -> list[Variant]:
    """Parse `scan/inner,scan/inner,...`.

    Raises:
        ConfigError: an item that is not scan/inner, an unknown scan or inner (naming the
            known ones), or a repeated variant.
    """
    out: list[Variant] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        scan, sep, inner = item.partition("/")
        if not sep or scan not in SCANS or inner not in INNERS:
            raise ConfigError(
                f"--variants: unknown variant {item!r}; use scan/inner with scan in "
                f"{', '.join(SCANS)} and inner in {', '.join(INNERS)}"
            )
        if Variant(scan, inner) in out:
            raise ConfigError(f"--variants: {item!r} is listed twice")
        out.append(Variant(scan, inner))
    if not out:
        raise ConfigError("--variants: no variant given")
    return out


def overrides(
    variant: Variant, epochs: int | None, sets: Sequence[str], data: Path | None
) -> list[str]:
    """The `--set` items of one variant: its model switches, then the shared budget."""
    if any(s.split("=", 1)[0].strip().startswith("model.overrides") for s in sets):
        raise ConfigError("--set model.overrides: the variants set it; change --variants instead")
    items = [variant.override()]
    items += [f"train.epochs={epochs}"] if epochs is not None else []
    items += [f"data.root={data}"] if data is not None else []
    return items + list(sets)


def train_argv(root: Path, variant: Variant, items: list[str], nice: bool) -> list[str]:
    """The `istd train` subprocess of one variant (new or resumed: `--resume` covers both)."""
    argv = [sys.executable, "-m", "istd", "train", CONFIG, "--work-dir", str(root / variant.name)]
    argv += [a for item in items for a in ("--set", item)] + ["--resume", "--quiet"]
    return ["nice", "-n", "10", *argv] if nice else argv


@dataclass
class RunStatus:
    """How far a variant's work dir got."""

    started: bool
    done: int
    planned: int | None
    finished: bool


def run_status(run: Path) -> RunStatus:
    """Epochs done (log.csv) against planned (config.yaml); finished needs best/ as well."""
    if not (run / "config.yaml").is_file():
        return RunStatus(False, 0, None, False)
    planned = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["train"]["epochs"]
    rows = rw.read_log(run / "log.csv") if (run / "log.csv").is_file() else []
    done = int(rows[-1]["epoch"]) if rows else 0
    finished = done >= planned and (run / "best" / "model.safetensors").is_file()
    return RunStatus(True, done, planned, finished)


def train_variants(
    root: Path,
    variants: Sequence[Variant],
    items: Callable[[Variant], list[str]],
    *,
    nice: bool = False,
    runner: Callable[[list[str]], int] | None = None,
    log: Callable[[str], None] = print,
    after_each: Callable[[], None] | None = None,
) -> None:
    """Train the variants one after another; skip finished ones, resume the others.

    `after_each` runs after every variant that trained here (the report is rewritten then, so
    a session killed during a later variant still leaves the finished rows on disk).

    Raises:
        IstdError: a training subprocess failed (rerunning the same command resumes it).
    """
    run = runner or (lambda argv: subprocess.run(argv, check=False).returncode)
    root.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        status = run_status(root / variant.name)
        if status.finished:
            log(f"{variant.label}: finished ({status.done} epochs), skipped")
            continue
        argv = train_argv(root, variant, items(variant), nice)
        log(
            f"{variant.label}: {'resuming after epoch ' + str(status.done) if status.started else 'starting'}"
        )
        log("  " + shlex.join(argv))
        code = run(argv)
        if code != 0:
            raise IstdError(
                f"{variant.label}: istd train exited with {code}; rerun the same command to resume"
            )
        if after_each is not None:
            after_each()


def _data_root(run: Path, data: Path | None) -> Path:
    """--data, else the run's data.root (relative: the current folder, then the checkout)."""
    if data is not None:
        return data
    root = Path(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["data"]["root"])
    if not root.is_absolute() and not root.exists() and (rw.REPO / root).exists():
        root = rw.REPO / root
    return root


def eval_test_split(
    run: Path, data: Path, limit: int | None, device: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Test-split metrics of `run`'s best checkpoint, evaluated once per weights file."""
    from istd.engine.evaluate import run_evaluation

    cache = run / "test_eval.json"
    key = {"weights_sha256": rw.sha256_file(run / "best" / "model.safetensors"),
           "data": str(data.resolve()), "limit": limit}  # fmt: skip
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if all(cached.get(k) == v for k, v in key.items()):
            return cached["metrics"]
    log(f"{run.name}: evaluating the test split of {data}")
    summary = run_evaluation([str(run / "best")], data, run / "test_eval", limit=limit,
                             gallery=0, device=device, overwrite=True)  # fmt: skip
    m = summary.runs[0].metrics
    keep = ("iou", "niou", "pd", "fa", "n_images", "n_targets", "threshold")
    record = {**key, "split": summary.runs[0].facts["split"], "metrics": {k: m[k] for k in keep}}
    record["metrics"]["split"] = record["split"]
    write_atomic(cache, json.dumps(record, indent=2) + "\n", overwrite=True)
    return record["metrics"]


def latency(
    run: Path, size: tuple[int, int], runs: int, threads: int, remeasure: bool
) -> dict[str, Any]:
    """Parameters and CPU latency (median of `runs` forwards) of `run`'s best checkpoint.

    Timed with `istd.models.info.time_forward`, the code behind `istd info` (one warm-up, then
    `runs` forwards of one random image under inference mode); FLOPs are not counted here.
    """
    import statistics

    import torch

    from istd.models.info import load_for_info, time_forward

    cache = run / "latency.json"
    hw = rw.hardware()  # timings from another machine are measured again
    key = {"weights_sha256": rw.sha256_file(run / "best" / "model.safetensors"),
           "size": list(size), "threads": threads, "runs": runs,
           "machine": f"{hw['cpu']}, {hw['cpu_cores_usable']} cores, {hw['platform']}"}  # fmt: skip
    if cache.is_file() and not remeasure:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    net, _ = load_for_info(str(run / "best"))
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(1, net.config.in_chans, *size)  # (1, C, H, W)
        times, _ = time_forward(net.eval(), x, runs=runs)
    finally:
        torch.set_num_threads(saved)
    record = {**key, "parameters": sum(p.numel() for p in net.parameters()),
              "latency_ms": statistics.median(times), "latency_min_ms": min(times),
              "measured_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    write_atomic(cache, json.dumps(record, indent=2) + "\n", overwrite=True)
    return record


def _f(value: Any, digits: int = 4, scale: float = 1.0) -> str:
    return weights_card._f(value, digits, scale)


def _best_metric(configs: dict[str, dict[str, Any]]) -> str:
    names = sorted({str(c["train"]["best_metric"]) for c in configs.values()})
    return " / ".join(names) or "n/a"


def _same_recipe(configs: dict[str, dict[str, Any]]) -> str:
    """A sentence saying whether the runs' configs differ only in model.overrides."""
    flat = {k: {key: v for key, v in weights_card._flatten(c).items() if key != "model.overrides"}
            for k, c in configs.items()}  # fmt: skip
    if len(flat) < 2:
        return ""
    first = next(iter(flat.values()))
    keys = sorted({k for f in flat.values() for k in f if f.get(k) != first.get(k)})
    if not keys:
        return "The resolved configs of these runs are identical except `model.overrides`."
    return f"**The runs' configs also differ in {', '.join(keys)}: budgets are not equal.**"


def render_report(root: Path, variants: Sequence[Variant], rows: dict[str, dict[str, Any]],
                  settings: dict[str, Any]) -> str:  # fmt: skip
    """The markdown page: commands, hardware, method, then one table row per variant."""
    hw = rw.hardware()
    cmd_file = root / COMMAND_FILE
    trained = (
        json.loads(cmd_file.read_text(encoding="utf-8"))["command"] if cmd_file.is_file() else None
    )
    lines = [
        "# Ablation: scan order and inner path (MiM-ISTD on NUAA-SIRST)", "",
        "Generated by `tools/ablation.py` from the runs' files; do not edit by hand.", "",
        "Runs trained with:" if trained else "Training command: not recorded.", "",
    ]  # fmt: skip
    if trained:
        lines += ["```", trained, "```", ""]
    if settings["command"] != trained:
        lines += ["This report written with:", "", "```", settings["command"], "```", ""]
    configs = {v.label: r["config"] for v, r in ((v, rows.get(v.label)) for v in variants) if r}
    lines += [
        f"Each variant is `istd train` with the shipped config `{CONFIG}` plus the same "
        "overrides, differing only in `model.overrides` (exact per-run commands below). "
        + _same_recipe(configs), "",
        f"Hardware (this machine, which wrote the report and measured latency): {hw['cpu']}, "
        f"{hw['cpu_cores_usable']} usable cores, {hw['cuda'] or 'no GPU'}; {hw['platform']}; "
        f"torch {hw['torch']}. The machine is shared with other work: times are noisy.", "",
        "Validation metrics are those of each run's best checkpoint (selected on "
        f"val {_best_metric(configs)}); test "
        "metrics evaluate that checkpoint once on the test split at native resolution, threshold "
        f"0.5; latency is the median of {settings['runs']} forwards of one "
        f"{settings['size'][0]} x {settings['size'][1]} image on {settings['threads']} CPU threads "
        "after one warm-up (`istd.models.info.time_forward`, as `istd info`). Fa is x 1e-6.", "",
        "| variant | params (M) | val IoU | val nIoU | val Pd | val Fa | test IoU | test nIoU | "
        "test Pd | test Fa | latency (ms) | epochs | train wall time (h) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for v in variants:
        r = rows.get(v.label)
        if r is None or not r["status"].finished:
            s = r["status"] if r else None
            state = f"unfinished: epoch {s.done} of {s.planned}" if s and s.started else "not run"
            lines.append(f"| {v.label} | {state} |" + " |" * 11)
            continue
        val, test, lat = r["val"], r["test"], r["latency"]
        lines.append(
            f"| {v.label} | {lat['parameters'] / 1e6:.3f} | {_f(val.get('iou'))} | "
            f"{_f(val.get('niou'))} | {_f(val.get('pd'))} | {_f(val.get('fa'), 2, 1e6)} | "
            f"{_f(test.get('iou'))} | {_f(test.get('niou'))} | {_f(test.get('pd'))} | "
            f"{_f(test.get('fa'), 2, 1e6)} | {_f(lat['latency_ms'], 1)} | "
            f"{r['status'].done} (best {r['best_epoch']}) | {r['wall_h']:.2f} |"
        )
    if settings.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in settings["notes"]]
    tested = {r["test"]["n_images"] for r in rows.values() if r.get("test")}
    if tested:
        lines += ["", f"Test images per variant: {', '.join(str(int(n)) for n in sorted(tested))}."]
    lines += ["", f"Continue unfinished runs with the training command above (finished runs are "
              f"skipped); rebuild this table with `python tools/ablation.py --root {root} "
              "--report-only`."]  # fmt: skip
    lines += ["", "Per-run commands (reproduce one cell; add `--resume` to continue):", "", "```"]
    lines += [r["command"] for r in rows.values()] + ["```"]
    return "\n".join(lines) + "\n"


def collect(root: Path, variants: Sequence[Variant], *, data: Path | None, test_limit: int | None,
            size: tuple[int, int], runs: int, threads: int, remeasure: bool, device: str,
            log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Read or compute every figure of the existing runs (label -> row facts)."""
    from istd.models.hub import read_config

    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        run = root / v.name
        status = run_status(run)
        if not status.started:
            continue
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        try:
            command = rw.train_command_line(config, str(run), base=CONFIG)
        except ConfigError:  # no shipped config reproduces it: the saved YAML does
            command = shlex.join(
                ["istd", "train", str(run / "config.yaml"), "--work-dir", str(run)]
            )
        row: dict[str, Any] = {"status": status, "config": config, "command": command}
        if status.finished:
            meta = read_config(run / "best")
            built = (meta["config"].get("scan"), meta["config"].get("inner"))
            if built != (v.scan, v.inner):
                raise ConfigError(
                    f"{run / 'best'}: holds a {built[0]}/{built[1]} model, not {v.label}"
                )
            extra = meta["extra"]
            log_rows = rw.read_log(run / "log.csv")
            row.update(
                val=extra.get("metrics", {}), best_epoch=extra.get("epoch"),
                wall_h=sum(r["epoch_s"] or 0.0 for r in log_rows) / 3600,
                test=eval_test_split(run, _data_root(run, data), test_limit, device, log),
                latency=latency(run, size, runs, threads, remeasure),
            )  # fmt: skip
        rows[v.label] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (an `IstdError` prints one line and gives 1)."""
    from istd.models.info import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="folder of the variants' work dirs")
    p.add_argument("--epochs", type=int, help="training epochs of every variant (the budget)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated scan/inner")
    p.add_argument("--data", type=Path, help="NUAA-SIRST root (training and test evaluation)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override shared by every variant (repeatable)")  # fmt: skip
    p.add_argument("--report", type=Path, default=rw.REPO / "docs" / "ablation.md")
    p.add_argument("--report-only", action="store_true", help="no training: table from the runs")
    p.add_argument("--nice", action="store_true", help="train under nice -n 10")
    p.add_argument("--test-limit", type=int, help="first N test images only (smoke runs)")
    p.add_argument("--latency-size", default="512x512", help="HxW of the latency input")
    p.add_argument("--latency-runs", type=int, default=5, help="timed forwards (median)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for latency")
    p.add_argument("--remeasure", action="store_true", help="measure latency again")
    p.add_argument("--device", default="cpu", help="test evaluation device")
    p.add_argument(
        "--note",
        dest="notes",
        action="append",
        default=[],
        metavar="TEXT",
        help="a paragraph for the report's notes (repeatable)",
    )
    args = p.parse_args(argv)
    command = "python tools/ablation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        variants = parse_variants(args.variants)
        if not args.report_only:
            if args.epochs is None or args.epochs < 1:
                raise ConfigError("--epochs N (>= 1) is required to train; or pass --report-only")

            def items(v: Variant) -> list[str]:
                return overrides(v, args.epochs, args.sets, args.data)

            from istd.engine.config import load_config

            for v in variants:  # bad --set items or another budget fail here, before training
                wanted = load_config(CONFIG, items(v)).to_dict()
                saved = args.root / v.name / "config.yaml"
                if saved.is_file() and yaml.safe_load(saved.read_text(encoding="utf-8")) != wanted:
                    raise ConfigError(
                        f"{saved}: that run was started with another config (budget); use its "
                        "--epochs/--set again, or another --root"
                    )
            args.root.mkdir(parents=True, exist_ok=True)
            write_atomic(args.root / COMMAND_FILE, json.dumps({"command": command}) + "\n",
                         overwrite=True)  # fmt: skip
        size = parse_size(args.latency_size)

        def write_report() -> None:
            rows = collect(args.root, variants, data=args.data, test_limit=args.test_limit,
                           size=size, runs=args.latency_runs, threads=args.threads,
                           remeasure=args.remeasure, device=args.device)  # fmt: skip
            settings = {"command": command, "size": size, "runs": args.latency_runs,
                        "threads": args.threads, "notes": args.notes}  # fmt: skip
            write_atomic(
                args.report, render_report(args.root, variants, rows, settings), overwrite=True
            )
            print(f"report: {args.report}", flush=True)

        if not args.report_only:
            train_variants(args.root, variants, items, nice=args.nice, after_each=write_report)
        write_report()
    except IstdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
