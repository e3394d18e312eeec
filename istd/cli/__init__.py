"""The `istd` command line: a thin Typer layer over the library.

Each command group lives in its own module and joins the root app through `register(app)`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from istd import __version__
from istd.cli import data, evaluate, info, predict, runs, train

app = typer.Typer(
    name="istd",
    help="Infrared small-target detection with MiM-ISTD: segment images and videos, train, evaluate.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"istd {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Infrared small-target detection with MiM-ISTD."""


for _module in (data, predict, evaluate, train, runs, info):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
