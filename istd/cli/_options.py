"""Pieces shared by every CLI command: the error-to-exit mapping, the Rich consoles, the
options several commands take (one definition, so names and help stay alike) and the progress
bar they draw on stderr.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from istd.errors import IstdError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(fn: F) -> F:
    """Turn an `IstdError` into one red line on stderr and exit code 1, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IstdError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


# Options shared by the commands that run a model (predict, eval-video, eval, info).
WeightsOption = Annotated[
    str | None,
    typer.Option(
        "--weights", help="Weights folder or name under weights/ (default: the default weights)."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Weight-free detector instead of weights, e.g. tophat, mpcm, maxmedian."
    ),
]
ThresholdOption = Annotated[
    float, typer.Option("--threshold", help="Probability above which a pixel is target.")
]
FIRST_RUN_NOTE = (
    "[dim]First MiM-ISTD run on this machine: compiling the CPU kernels (about 30 s, once; "
    "cached on disk).[/]"
)


def compiles_first(sources: list[str], device: str) -> bool:
    """Whether a run of these models (names or weights folders) on ``device`` starts by
    compiling the Numba CPU kernels, so that the command can say so before it looks stalled."""
    from istd.ops import cpu_kernels_cached

    mim = any("mim-istd" in str(s) for s in sources)
    return mim and not device.startswith("cuda") and not cpu_kernels_cached()


DeviceOption = Annotated[str, typer.Option("--device", help="Torch device, e.g. cpu or cuda:0.")]
BatchOption = Annotated[int, typer.Option("--batch", help="Frames per forward pass.")]


class Precision(str, Enum):
    """Dense-convolution precision at inference (`istd.models.precision`)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto: bfloat16 dense convolutions on a CPU with native bfloat16 (AVX512-BF16, "
        "AMX), float32 elsewhere; float32: the reference arithmetic; bfloat16.",
    ),
]


InputScaleOption = Annotated[
    float | None,
    typer.Option(
        "--input-scale",
        help="Run the network on frames resized by this factor, 0.25-4 (compute grows with its "
        "square); default: the weights' own (input_scale in their config.json, 1 when absent).",
    ),
]

TTAOption = Annotated[
    bool,
    typer.Option(
        "--tta",
        help="Average the probabilities over each frame and its horizontal, vertical and double "
        "flips (four times the compute); whether it pays depends on the weights (their card).",
    ),
]


def overwrite_option(help: str) -> Any:
    """The ``--overwrite`` flag; `help` says what this command would replace."""
    return typer.Option("--overwrite", help=help)


def json_file_option(help: str) -> Any:
    """A ``--json FILE`` output option (a file, never a folder)."""
    return typer.Option("--json", help=help, dir_okay=False)


def progress_bar(
    *extra: ProgressColumn, description: str = "[bold]{task.description}", **kwargs: Any
) -> Progress:
    """A Rich progress bar on stderr: description, bar, done/total, `extra` columns, elapsed.

    Args:
        *extra: columns shown before the elapsed time (e.g. a frame counter).
        description: format of the first column.
        **kwargs: passed to `Progress` (``transient``, ``disable``).
    """
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=err_console,
        **kwargs,
    )


def key_value_table(title: str) -> Table:
    """A two-column Rich table without header (bold names, values) for a command's summary."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    return table
