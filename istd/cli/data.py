"""`istd data ...`: dataset commands (a thin layer over `istd.data.check`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from istd.cli._options import cli_errors, console, err_console, json_file_option, progress_bar
from istd.data.check import CheckReport, check_dataset, write_report_json
from istd.errors import DataError

_MAX_PROBLEMS_SHOWN = 40
_MAX_SIZES_SHOWN = 8


class Layout(str, Enum):
    """Dataset layouts accepted by ``--layout``."""

    auto = "auto"
    sirst = "sirst"
    basicirstd = "basicirstd"
    dnanet = "dnanet"
    isnet = "isnet"
    folder = "folder"


def _counts_table(key: str, unit: str, counts: dict, limit: int | None = None) -> Table:
    table = Table(show_edge=False)
    table.add_column(key)
    table.add_column(unit, justify="right")
    items = list(counts.items())
    shown = items if limit is None else items[:limit]
    for value, count in shown:
        table.add_row(str(value), f"{count:,}")
    if len(items) > len(shown):
        rest = sum(count for _, count in items[len(shown) :])
        table.add_row(f"[dim]{len(items) - len(shown)} others[/]", f"{rest:,}")
    return table


def _print_report(report: CheckReport) -> None:
    summary = Table(title=f"Dataset {report.root}", title_justify="left", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("layout", report.layout)
    summary.add_row("split", report.split)
    summary.add_row("images", f"{report.images:,}")
    summary.add_row("masks", f"{report.masks:,}")
    summary.add_row("targets (8-connected)", f"{report.targets:,}")
    if report.target_area:
        area = ", ".join(f"{k} {v:g}" for k, v in report.target_area.items())
        summary.add_row("target area (px)", area)
    if report.fixed:
        summary.add_row("mask fixes applied", ", ".join(report.fixed))
    if report.splits:
        summary.add_row("split files", ", ".join(f"{k} ({v})" for k, v in report.splits.items()))
    console.print(summary)
    console.print(_counts_table("image size (WxH)", "images", report.sizes, _MAX_SIZES_SHOWN))
    console.print(_counts_table("image mode", "images", report.image_modes))
    console.print(_counts_table("mask mode", "masks", report.mask_modes))
    console.print(_counts_table("mask values", "masks", report.mask_values, _MAX_SIZES_SHOWN))
    console.print(_counts_table("targets per image", "images", report.targets_per_image))
    if report.ok:
        console.print("[bold green]no problems found[/]")
        return
    problems = Table(title=f"{len(report.problems)} problem(s)", title_justify="left")
    problems.add_column("kind", style="red")
    problems.add_column("path", overflow="fold")
    problems.add_column("detail", overflow="fold")
    for p in report.problems[:_MAX_PROBLEMS_SHOWN]:
        problems.add_row(p.kind, p.path, p.detail)
    console.print(problems)
    if len(report.problems) > _MAX_PROBLEMS_SHOWN:
        console.print(
            f"[dim]... and {len(report.problems) - _MAX_PROBLEMS_SHOWN} more (see --json)[/]"
        )
    if report.fixes_available and not report.fixed:
        console.print("[yellow]this dataset has a fixes/ folder: rerun with --fixes to apply it[/]")


data_app = typer.Typer(help="Inspect and check datasets.", no_args_is_help=True)


@data_app.command("check")
@cli_errors
def check(
    path: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, dir_okay=True, help="The dataset folder."),
    ],
    split: Annotated[
        str | None,
        typer.Option(help="Check only this split (e.g. test, 50_50/train); default: everything."),
    ] = None,
    layout: Annotated[
        Layout, typer.Option(help="Dataset layout; auto detects it.", case_sensitive=False)
    ] = Layout.auto,
    fixes: Annotated[
        bool,
        typer.Option(
            "--fixes/--no-fixes",
            help="Apply the corrected masks in <PATH>/fixes/ (off: as shipped).",
        ),
    ] = False,
    json_path: Annotated[
        Path | None, json_file_option("Also write the report as JSON to this file.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the --json file if it already exists.")
    ] = False,
) -> None:
    """Read every image and mask of a dataset; print a summary and every problem (exit 1 if any)."""
    if json_path is not None and json_path.exists() and not overwrite:
        # Fail before the long read rather than after it.
        raise DataError(f"{json_path}: already exists; pass --overwrite to replace it")
    with progress_bar(
        description="checking", transient=True, disable=not err_console.is_terminal
    ) as bar:
        task = bar.add_task("check", total=None)
        report = check_dataset(
            path,
            split=split,
            layout=layout.value,
            fixes=fixes,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    _print_report(report)
    if json_path is not None:
        write_report_json(report, json_path, overwrite=overwrite)
        console.print(f"report written to {json_path}")
    if not report.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app."""
    app.add_typer(data_app, name="data")
