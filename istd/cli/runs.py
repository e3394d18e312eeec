"""`istd runs`: training runs side by side, a thin layer over `istd.engine.runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from istd.cli._options import cli_errors, console, overwrite_option


def register(app: typer.Typer) -> None:
    """Add `istd runs` to the root app."""

    @app.command("runs")
    @cli_errors
    def runs(
        folders: Annotated[
            list[Path],
            typer.Argument(
                help="Work dirs of istd train (running or finished) or released weights folders.",
                show_default=False,
            ),
        ],
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Also write runs.csv, runs.md and val_curves.png (validation IoU and Fa "
                "by epoch, one line per run) here; absent or empty unless --overwrite.",
                file_okay=False,
            ),
        ] = None,
        overwrite: Annotated[
            bool, overwrite_option("Replace the files of an existing --out folder.")
        ] = False,
    ) -> None:
        """Compare training runs: epochs done, hours, and each run's best validation epoch.

        Example: istd runs runs/nuaa-a runs/nuaa-b --out runs/compare
        """
        from istd.engine.runs import printable_runs, read_runs, runs_table, write_runs_report

        read = read_runs(folders)
        shown = printable_runs(runs_table(read)).rename(columns={"best epoch": "best"})
        selected_by = set(shown["selected by"])
        title = "training runs: validation metrics of the epoch in best/"
        if len(selected_by) == 1:  # say it once, in the title, to leave the width to the figures
            title += f", selected by {selected_by.pop()}"
            shown = shown.drop(columns="selected by")
        # Fine-tuned runs are named under the table: a column would not fit 80 characters.
        pairs = zip(shown["run"], shown["starts from"], strict=True)
        starts = [(run, source) for run, source in pairs if source]
        shown = shown.drop(columns="starts from")
        table = Table(title=title)
        for header in shown.columns:
            if header == "run":  # names fold; figures stay whole
                table.add_column(header, overflow="fold", min_width=12)
            else:
                table.add_column(header, justify="right", no_wrap=True)
        for row in shown.itertuples(index=False):
            table.add_row(*(escape(str(value)) for value in row))
        console.print(table)
        for run, source in starts:
            console.print(f"{escape(run)} was fine-tuned from {escape(source)}", highlight=False)
        if out is not None:
            files = write_runs_report(out, read, overwrite=overwrite)
            console.print(
                f"[green]wrote[/] {', '.join(f.name for f in files)} to {out}", highlight=False
            )
