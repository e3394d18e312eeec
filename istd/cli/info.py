"""`istd info MODEL`: parameters, FLOPs, latency and peak memory of a model on this machine."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer

from istd.cli._options import (
    DeviceOption,
    Precision,
    PrecisionOption,
    cli_errors,
    console,
    key_value_table,
)
from istd.models.info import model_info, parse_size


class ScanBackend(str, Enum):
    """Selective-scan backends accepted by ``--scan-backend``."""

    auto = "auto"
    reference = "reference"
    cpu = "cpu"
    triton = "triton"


def register(app: typer.Typer) -> None:
    """Add `istd info` to the root app."""

    @app.command("info")
    @cli_errors
    def info(
        model: Annotated[
            str,
            typer.Argument(
                help="Registry name (e.g. mim-istd, mim-istd-s, tophat; random weights) or a "
                "weights folder / named weights.",
                show_default=False,
            ),
        ],
        size: Annotated[str, typer.Option(help="Input size HxW (batch 1).")] = "512x512",
        threads: Annotated[
            int | None, typer.Option(help="Torch CPU threads (default: torch's choice).")
        ] = None,
        runs: Annotated[int, typer.Option(help="Timed forwards after one warm-up.")] = 5,
        device: DeviceOption = "cpu",
        precision: PrecisionOption = Precision.auto,
        scan_backend: Annotated[
            ScanBackend | None, typer.Option(help="Override the model's selective-scan backend.")
        ] = None,
        no_timing: Annotated[
            bool, typer.Option("--no-timing", help="Only count parameters and FLOPs.")
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON instead of a table.")
        ] = False,
    ) -> None:
        """Show a model's parameters, FLOPs (scan included), latency and peak memory here."""
        from istd.engine.evaluate import _resolve_device  # the check `istd eval` makes

        hw = parse_size(size)
        _resolve_device(device)  # an unknown or absent device: one red line, not a traceback
        with console.status(f"measuring {model} at {hw[0]}x{hw[1]} ...", spinner="dots"):
            result = model_info(
                model,
                hw,
                device=device,
                threads=threads,
                runs=runs,
                measure=not no_timing,
                scan_backend=scan_backend.value if scan_backend else None,
                precision=precision.value,
            )
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        table = key_value_table(f"{result.model}")
        table.add_row("source", result.source)
        table.add_row("parameters", f"{result.parameters:,} ({result.parameters / 1e6:.2f} M)")
        table.add_row("input", f"1 x {result.size[0]} x {result.size[1]}")
        table.add_row(
            "GFLOPs",
            f"{result.gflops:.3g} (selective scan {result.gflops_scan:.3g}; matmul/conv via "
            "torch.utils.flop_counter, elementwise ops not counted)",
        )
        if result.latency_ms is not None:
            table.add_row(
                "latency",
                f"{result.latency_ms:.1f} ms median, {result.latency_min_ms:.1f} ms best "
                f"({result.runs} runs, eval, batch 1)",
            )
            if result.device.startswith("cuda"):
                mem = f"{result.peak_memory_mb:.0f} MiB (peak allocated CUDA memory, weights included)"
            elif result.peak_memory_mb is None:
                mem = "not measured (needs Linux /proc)"
            else:
                mem = (
                    f"{result.peak_memory_mb:.1f} MiB (peak RSS increase over the forwards, "
                    "warm-up and first-call kernel loading included)"
                )
            table.add_row("peak memory", mem)
        table.add_row("device", f"{result.device}, {result.threads} threads")
        table.add_row("convolutions", result.conv_dtype)
        if result.scan_backend:
            table.add_row("scan backend", result.scan_backend)
        console.print(table)
