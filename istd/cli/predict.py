"""`istd predict` and `istd eval-video`: thin layers over `istd.engine.predict_run` and `video_eval`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TextColumn
from rich.table import Table

from istd.cli._options import (
    FIRST_RUN_NOTE,
    BatchOption,
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
    json_file_option,
    key_value_table,
    overwrite_option,
    progress_bar,
)


def _progress() -> Progress:
    return progress_bar(TextColumn("{task.fields[frames]} frames"), transient=False)


def _model_sources(weights: str | None, model: str | None) -> list[str]:
    """What the run loads (the default weights when neither is named) for `compiles_first`,
    with the architecture a weights folder's config.json names, as its path may not tell."""
    from istd.errors import IstdError
    from istd.models import DEFAULT_WEIGHTS, weights_dir
    from istd.models.hub import read_config

    source = weights or model or DEFAULT_WEIGHTS
    folder = Path(source) if Path(source).is_dir() else weights_dir() / source
    with contextlib.suppress(IstdError):
        return [source, read_config(folder)["model"]]
    return [source]


@cli_errors
def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders, videos (mp4, avi, mkv), frame folders with --sequence, "
            "or - to read paths from stdin.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).", file_okay=False)],
    weights: WeightsOption = None,
    model: ModelOption = None,
    threshold: ThresholdOption = 0.5,
    save_prob: Annotated[
        bool, typer.Option("--save-prob", help="Also write <stem>_prob.png (16-bit).")
    ] = False,
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay", help="Write targets outlined on the frame (<stem>_overlay.png / .mp4)."
        ),
    ] = False,
    track: Annotated[
        bool, typer.Option("--track", help="Track targets across video frames (fills track_id).")
    ] = False,
    tile: Annotated[
        int, typer.Option(help="Frames larger than this are predicted in blended tiles.")
    ] = 1024,
    batch: BatchOption = 8,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = Precision.auto,
    input_scale: InputScaleOption = None,
    tta: TTAOption = False,
    shard: Annotated[
        str, typer.Option(help="Process the K-th of N slices of the inputs, as K/N.")
    ] = "1/1",
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Search folders recursively.")
    ] = False,
    glob: Annotated[
        str, typer.Option(help="File-name pattern inside folders, e.g. '*.png'.")
    ] = "*",
    sequence: Annotated[
        bool,
        typer.Option("--sequence", help="Read each folder as one frame sequence, like a video."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Skip inputs whose outputs are complete; redo the rest."),
    ] = False,
    overwrite: Annotated[
        bool, overwrite_option("Replace existing outputs in --out (inputs are never touched).")
    ] = False,
) -> None:
    """Segment infrared images and videos: masks, detections.csv, overlays and summary.json."""
    from istd.engine.predict_run import PredictOptions, predict_paths

    options = PredictOptions(
        save_prob=save_prob, overlay=overlay, track=track, resume=resume, overwrite=overwrite
    )
    with _progress() as progress:
        # The bar appears once the inputs are known and the model is loaded (on_start), so an
        # early error (no inputs, missing weights) prints alone.
        task = progress.add_task("predict", total=None, frames=0, visible=False)
        frames = 0

        started = 0

        def on_start(items: list) -> None:
            progress.update(task, total=len(items), visible=True)
            if compiles_first(_model_sources(weights, model), device):
                progress.console.print(FIRST_RUN_NOTE, highlight=False)

        def on_input(item: object) -> None:
            # The bar counts inputs started; the last one is completed when the run returns.
            nonlocal started
            progress.update(
                task, completed=started, description=Path(str(getattr(item, "path", ""))).name[:40]
            )
            started += 1

        def on_frames(count: int) -> None:
            nonlocal frames
            frames += count
            progress.update(task, frames=frames)

        def on_failure(item: object, message: str) -> None:
            progress.console.print(
                f"[bold red]failed:[/] {message}", highlight=False, soft_wrap=True
            )

        summary = predict_paths(
            inputs,
            out,
            weights=weights,
            model=model,
            device=device,
            threshold=threshold,
            tile=tile,
            batch_size=batch,
            precision=precision.value,
            input_scale=input_scale,
            tta=tta,
            options=options,
            recursive=recursive,
            glob=glob,
            sequence=sequence,
            shard=shard,
            stdin=sys.stdin,
            on_start=on_start,
            on_input=on_input,
            on_frames=on_frames,
            on_failure=on_failure,
        )
        progress.update(task, completed=summary.inputs, description="predict")
    table = key_value_table(f"istd predict -> {out}")
    table.add_row("weights", summary.weights)
    table.add_row("convolutions", summary.conv_dtype)
    if summary.tta:
        table.add_row("flip TTA", "on (4 forwards per frame)")
    table.add_row("inputs", f"{summary.inputs:,} (shard {summary.shard})")
    table.add_row("processed", f"{summary.processed:,}")
    if summary.skipped:
        table.add_row("skipped (complete, --resume)", f"{summary.skipped:,}")
    table.add_row("failed", f"[red]{len(summary.failures):,}[/]" if summary.failures else "0")
    table.add_row(
        "frames",
        f"{summary.frames:,} in {summary.seconds:.1f} s ({summary.frames_per_second:.1f} fps)",
    )
    console.print(table)
    if summary.failures:
        raise typer.Exit(code=1)


@cli_errors
def eval_video(
    videos: Annotated[
        list[Path],
        typer.Argument(help="Video files, or folders of videos.", exists=True, show_default=False),
    ],
    labels: Annotated[
        Path,
        typer.Option(
            "--labels",
            help="Per-frame boxes frame,x,y,w,h (MATLAB 1-based): a CSV for one video, "
            "or a folder of <video stem>.csv.",
            exists=True,
        ),
    ],
    json_path: Annotated[Path | None, json_file_option("Write the report as JSON.")] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table as Markdown.", dir_okay=False)
    ] = None,
    weights: WeightsOption = None,
    model: ModelOption = None,
    threshold: ThresholdOption = 0.5,
    margin: Annotated[float, typer.Option(help="Pixels by which each label box is grown.")] = 2.0,
    batch: BatchOption = 8,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = Precision.auto,
    input_scale: InputScaleOption = None,
    tta: TTAOption = False,
    overwrite: Annotated[
        bool, overwrite_option("Replace existing --json / --markdown files.")
    ] = False,
) -> None:
    """Score videos against per-frame boxes: Pd, false objects per frame, and the same on tracks."""
    from istd.engine.video_eval import run_video_eval

    with _progress() as progress:
        task = progress.add_task("eval-video", total=None, frames=0, visible=False)
        state = {"started": 0, "frames": 0}

        def on_start(pairs: list) -> None:
            progress.update(task, total=len(pairs), visible=True)

        def on_video(video: Path) -> None:
            progress.update(task, completed=state["started"], description=video.name[:40])
            state["started"] += 1

        def on_frames(count: int) -> None:
            state["frames"] += count
            progress.update(task, frames=state["frames"])

        def on_failure(video: Path, message: str) -> None:
            progress.console.print(
                f"[bold red]failed:[/] {message}", highlight=False, soft_wrap=True
            )

        report = run_video_eval(
            list(videos),
            labels,
            weights=weights,
            model=model,
            device=device,
            threshold=threshold,
            batch_size=batch,
            precision=precision.value,
            input_scale=input_scale,
            tta=tta,
            margin=margin,
            json_path=json_path,
            markdown_path=markdown,
            overwrite=overwrite,
            on_start=on_start,
            on_video=on_video,
            on_frames=on_frames,
            on_failure=on_failure,
        )
        progress.update(task, completed=state["started"], description="eval-video")
    table = Table(
        title=f"istd eval-video ({report.weights}, threshold {report.threshold:g}"
        + (", flip TTA)" if report.tta else ")"),
        title_justify="left",
    )
    for name in (
        "video",
        "frames",
        "labelled",
        "Pd",
        "false/frame",
        "track Pd",
        "track false/frame",
        "tracks T/F",
    ):
        table.add_column(
            name, justify="left" if name == "video" else "right", no_wrap=name == "video"
        )

    def fmt(value: float, digits: int = 3) -> str:
        return "n/a" if value != value else f"{value:.{digits}f}"

    for s in [*report.videos, report.total]:
        table.add_row(
            f"[bold]{s.video}[/]" if s is report.total else s.video,
            str(s.frames),
            str(s.labelled_frames),
            fmt(s.pd),
            fmt(s.false_per_frame, 2),
            fmt(s.track_pd),
            fmt(s.track_false_per_frame, 2),
            f"{s.target_tracks}/{s.false_tracks}",
        )
    console.print(table)
    if report.failures:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add `predict` and `eval-video` to the root app."""
    app.command("predict")(predict)
    app.command("eval-video")(eval_video)
