"""`istd eval` and `istd score`: thin layers over `istd.engine.evaluate` and `istd.metrics.score`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from istd.cli._options import (
    FIRST_RUN_NOTE,
    DeviceOption,
    InputScaleOption,
    ModelOption,
    Precision,
    PrecisionOption,
    ThresholdOption,
    TTAOption,
    WeightsOption,
    cli_errors,
    compiles_first,
    console,
    err_console,
    json_file_option,
    overwrite_option,
    progress_bar,
)
from istd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


class Matching(str, Enum):
    """Target matching rule."""

    first = "first"
    optimal = "optimal"


def _check_threshold(threshold: float) -> None:
    """Refuse a threshold outside (0, 1), as `istd predict` does, before any work starts."""
    if not 0.0 < threshold < 1.0:  # also refuses NaN
        raise ConfigError(f"threshold must lie in (0, 1), got {threshold}")


def _fmt(value: Any, scale: float = 100.0) -> str:
    if value is None or value != value:  # NaN: undefined (e.g. Pd without targets)
        return "n/a"
    return f"{value * scale:.2f}"


def _metrics_table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(title=title)
    for header in ("model", "IoU %", "nIoU %", "Pd %", "Fa x1e-6", "F1 %", "images", "targets"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for name, m in rows:
        table.add_row(
            name,
            _fmt(m["iou"]),
            _fmt(m["niou"]),
            _fmt(m["pd"]),
            _fmt(m["fa"], 1e6),
            _fmt(m["f1"]),
            str(m["n_images"]),
            str(m["n_targets"]),
        )
    return table


def _differences_table(first: str, differences: pd.DataFrame) -> Table:
    """Each model's differences from `first` with their 95 % paired-bootstrap intervals."""
    from istd.metrics.report import printable_differences

    shown = printable_differences(first, differences).iloc[:, [0, 1, 4, 5, 6]]  # no values
    table = Table(title=f"differences from {first} (paired bootstrap over images)")
    for header in shown.columns:
        table.add_column(header, justify="left" if header in ("model", "metric") else "right")
    for row in shown.itertuples(index=False):
        table.add_row(*map(str, row))
    return table


@cli_errors
def eval_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Dataset folder (SIRST, BasicIRSTD, DNANet, ISNet or images/ + masks/).",
            exists=True,
            file_okay=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Report folder (must be absent or empty unless --overwrite).",
            file_okay=False,
        ),
    ],
    weights: WeightsOption = None,
    model: ModelOption = None,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated weights folders or model names to compare on the same split; "
            "each one's differences from the first come with 95 % bootstrap intervals."
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split name (default: the layout's test split).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Dataset layout, or auto to detect it.")] = "auto",
    threshold: ThresholdOption = 0.5,
    matching: Annotated[
        Matching, typer.Option(help="Target matching: first (BasicIRSTD) or optimal.")
    ] = Matching.first,
    limit: Annotated[
        int | None, typer.Option(help="Evaluate only the first N images of the split.")
    ] = None,
    gallery: Annotated[int, typer.Option(help="Number of worst images drawn in the report.")] = 8,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = Precision.float32,
    input_scale: InputScaleOption = None,
    tta: TTAOption = False,
    overwrite: Annotated[
        bool, overwrite_option("Replace the files of an existing report.")
    ] = False,
) -> None:
    """Evaluate a model on a dataset split and write a report (md, html, json, csv, plots)."""
    from istd.engine.evaluate import run_evaluation
    from istd.models import DEFAULT_WEIGHTS

    _check_threshold(threshold)
    if gallery < 0:
        raise ConfigError(f"--gallery must be >= 0 (0 draws none), got {gallery}")
    # The evaluated model (the default weights when none is named) comes first, then --compare.
    sources = [s for s in (weights, model) if s] or [DEFAULT_WEIGHTS]
    if compare:
        sources += [s.strip() for s in compare.split(",") if s.strip()]
    with progress_bar() as progress:
        if compiles_first(sources, device):
            progress.console.print(FIRST_RUN_NOTE, highlight=False)
        tasks: dict[str, Any] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        summary = run_evaluation(
            sources,
            data,
            out,
            split=split,
            layout=layout,
            threshold=threshold,
            matching=matching.value,
            device=device,
            precision=precision.value,
            input_scale=input_scale,
            tta=tta,
            limit=limit,
            gallery=gallery,
            overwrite=overwrite,
            progress=on_progress,
        )
    facts = summary.runs[0].facts
    if split is None and facts["split"] == "all":
        # No test split to default to: every image was scored, training images included.
        err_console.print(
            f"[yellow]{escape(str(data))} has no test split: evaluated all {facts['n_images']} "
            "images (training images included); pass --split to choose",
            soft_wrap=True,
        )
    console.print(
        _metrics_table(
            f"{facts['dataset']} / {facts['split']} (threshold {threshold:g}"
            + (", flip TTA)" if tta else ")"),
            [(r.label, r.metrics) for r in summary.runs],
        )
    )
    if not summary.differences.empty:
        console.print(_differences_table(summary.runs[0].label, summary.differences))
    main = "comparison.md" if len(summary.runs) > 1 else "report.md"
    console.print(f"report: [bold]{summary.out_dir / main}[/] ({len(summary.files)} files)")


@cli_errors
def score_command(
    pred_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder of saved predictions (masks or probability maps).",
            exists=True,
            file_okay=False,
        ),
    ],
    gt_dir: Annotated[
        Path, typer.Argument(help="Folder of ground-truth masks.", exists=True, file_okay=False)
    ],
    threshold: Annotated[
        float, typer.Option(help="Probability above which a pixel is target (maps only).")
    ] = 0.5,
    matching: Annotated[
        Matching, typer.Option(help="Target matching: first (BasicIRSTD) or optimal.")
    ] = Matching.first,
    fixes: Annotated[
        Path | None,
        typer.Option(
            help="Folder of corrected ground-truth masks (a dataset's fixes/, e.g. "
            "NUAA-SIRST/fixes): a file there replaces the mask of the same name.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    json_file: Annotated[
        Path | None, json_file_option("Write the metrics to this JSON file.")
    ] = None,
    overwrite: Annotated[bool, overwrite_option("Replace an existing --json file.")] = False,
) -> None:
    """Score saved predictions against ground-truth masks, pairing files by stem."""
    from istd.data.io import write_bytes_atomic
    from istd.metrics.report import to_json
    from istd.metrics.score import score_folders

    _check_threshold(threshold)
    with progress_bar() as progress:
        task = progress.add_task("score", total=None)
        result = score_folders(
            pred_dir,
            gt_dir,
            threshold=threshold,
            matching=matching.value,
            on_step=lambda done, total: progress.update(task, completed=done, total=total),
            fixes=fixes,
        )
    console.print(_metrics_table(f"{pred_dir} vs {gt_dir}", [(pred_dir.name, result.metrics)]))
    if result.fixed:
        names = ", ".join(p.name for p in result.fixed)
        err_console.print(
            f"[dim]{len(result.fixed)} ground-truth masks replaced from {escape(str(fixes))}: "
            f"{escape(names)}",
            soft_wrap=True,
        )
    if result.unpaired:
        names = ", ".join(p.name for p in result.unpaired[:5])
        more = f" and {len(result.unpaired) - 5} more" if len(result.unpaired) > 5 else ""
        err_console.print(
            f"[yellow]{len(result.unpaired)} predictions without ground truth ignored: {names}{more}"
        )
    if json_file is not None:
        write_bytes_atomic(json_file, to_json(result.metrics), overwrite=overwrite)
        console.print(f"metrics: [bold]{json_file}[/]")


def register(app: typer.Typer) -> None:
    """Add `istd eval` and `istd score` to the root app."""
    app.command("eval")(eval_command)
    app.command("score")(score_command)
