"""`istd train`: train a network from a shipped config or a YAML file.

The command parses options, builds a Rich progress reporter and calls `istd.engine.train.fit`;
everything else (config checks, data, checkpoints, DDP) lives in the library.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from istd.cli._options import cli_errors, console


class Device(str, Enum):
    """Where to train."""

    cpu = "cpu"
    cuda = "cuda"


def _reporter(quiet: bool) -> Any:
    from istd.engine.train import Reporter

    class RichReporter(Reporter):
        """A per-epoch Rich progress bar (loss, images/s, ETA), or plain lines with --quiet."""

        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None
            self.images = 0
            self.began = 0.0

        def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            self.images, self.began = 0, time.perf_counter()
            if quiet:
                return
            self.progress = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("{task.fields[ips]:.1f} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=steps, loss=float("nan"), ips=0.0)

        def step(self, loss: float, images: int) -> None:
            self.images += images
            if self.progress is not None:
                ips = self.images / max(time.perf_counter() - self.began, 1e-9)
                self.progress.update(self.task, advance=1, loss=loss, ips=ips)

        def epoch_end(self, row: dict[str, Any]) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None
            vals = " ".join(
                f"fa {v * 1e6:.2f}e-6" if k == "val_fa" else f"{k[4:]} {v:.4f}"
                for k, v in row.items()
                if k.startswith("val_")
            )
            if row["loss"] is None:  # epoch 0: the starting weights, before any step
                head = f"epoch 0 (starting weights): {row['epoch_s']:.1f} s"
            else:
                head = (
                    f"epoch {row['epoch']}: loss {row['loss']:.4f}  lr {row['lr']:.3g}  "
                    f"{row['images_per_s']:.1f} img/s  {row['epoch_s']:.1f} s"
                )
            console.print(head + (f"  val {vals}" if vals else ""), highlight=False)

        def note(self, text: str) -> None:
            if (
                self.progress is not None
            ):  # training is over for this epoch; validation notes follow
                self.progress.stop()
                self.progress = None
            if not quiet:
                console.print(f"[dim]{text}[/]", highlight=False)

    return RichReporter()


def register(app: typer.Typer) -> None:
    """Add `istd train` to the root app."""

    @app.command("train")
    @cli_errors
    def train(
        work_dir: Annotated[
            Path,
            typer.Option(
                "--work-dir",
                help="Run folder: config.yaml, log.csv, last.ckpt, best/. A new run refuses a "
                "folder that already holds one.",
                file_okay=False,
                show_default=False,
            ),
        ],
        config: Annotated[
            str | None,
            typer.Argument(
                help="Shipped config name (e.g. mim-istd_nuaa-sirst) or a YAML file; "
                "optional with --resume (the work dir's config.yaml is used).",
                show_default=False,
            ),
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set", help="Override a config field: key=value, e.g. optim.lr=0.01 (repeatable)."
            ),
        ] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue from the work dir's last.ckpt.")
        ] = False,
        load_from: Annotated[
            Path | None,
            typer.Option(
                "--load-from",
                help="Initialise the network from a weights folder (model.safetensors + config.json).",
                exists=True,
                file_okay=False,
            ),
        ] = None,
        amp: Annotated[
            bool, typer.Option("--amp", help="bf16 autocast for everything but the scan (float32).")
        ] = False,
        device: Annotated[
            Device, typer.Option("--device", help="Train on cpu or cuda.")
        ] = Device.cpu,
        quiet: Annotated[
            bool,
            typer.Option("--quiet", help="No progress bar: one plain line per epoch (CI logs)."),
        ] = False,
    ) -> None:
        """Train a network from a config: reproducible, resumable (--resume), DDP under torchrun.

        Example: istd train mim-istd_nuaa-sirst --work-dir runs/nuaa --set train.epochs=100
        """
        from istd.engine.distributed import env_dist_info
        from istd.engine.train import fit

        result = fit(
            config,
            work_dir,
            overrides=list(set_ or []),
            resume=resume,
            load_from=load_from,
            amp=amp,
            device=device.value,
            reporter=_reporter(quiet),
        )
        if env_dist_info().is_main:
            best = (
                f"best val {result.best_value:.4f} at epoch {result.best_epoch} -> {work_dir / 'best'}"
                if result.best_value is not None
                else "no best checkpoint (no finite validation value)"
            )
            console.print(
                f"[green]done[/]: {result.epochs} epochs, {result.step} steps; {best}",
                highlight=False,
            )
