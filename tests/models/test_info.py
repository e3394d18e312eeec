"""`istd info` and its library function: parameters, FLOPs with the scan, latency, memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from istd.cli import app
from istd.errors import ConfigError
from istd.models import build_model, save_pretrained
from istd.models.info import count_flops, model_info, parse_size, time_forward
from istd.models.layers.ss2d import SS2D


def test_parse_size() -> None:
    assert parse_size("512x640") == (512, 640)
    assert parse_size("96") == (96, 96)
    for bad in ("5x", "axb", "0x4", "1x2x3"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_scan_flops_follow_the_analytic_formula() -> None:
    model = build_model("mim-istd-test", scan_backend="reference", inner="none").eval()
    x = torch.rand(1, 1, 32, 48)
    _, scan = count_flops(model, x)
    # inner none: one SS2D per block, on the 4x6 sentence grid then the 2x3 grid.
    c = model.config
    expected = sum(
        9 * 4 * (c.expand * d) * L * c.d_state for d, L in zip(c.dims, (4 * 6, 2 * 3), strict=True)
    )
    assert scan == expected


def test_model_info_on_registry_and_weights_folder(tmp_path: Path) -> None:
    info = model_info("mim-istd-test", (40, 56), runs=2, scan_backend="reference")
    assert info.parameters == sum(p.numel() for p in build_model("mim-istd-test").parameters())
    assert info.gflops > info.gflops_scan > 0
    assert info.latency_ms > 0 and info.runs == 2
    # A model this small may run wholly in heap memory freed by earlier tests: no RSS increase.
    assert info.peak_memory_mb is None or info.peak_memory_mb >= 0
    folder = save_pretrained(build_model("mim-istd-test"), tmp_path / "w")
    loaded = model_info(str(folder), (40, 56), measure=False, scan_backend="reference")
    assert loaded.source == str(folder) and loaded.parameters == info.parameters
    assert loaded.gflops == pytest.approx(info.gflops)
    assert loaded.latency_ms is None


def test_cli_info_table_and_json() -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["info", "mim-istd-test", "--size", "40x56", "--runs", "1", "--scan-backend", "reference"],
    )
    assert result.exit_code == 0, result.output
    assert (
        "parameters" in result.output and "GFLOPs" in result.output and "latency" in result.output
    )
    result = runner.invoke(app, ["info", "tophat", "--size", "64", "--no-timing", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["parameters"] == 0 and data["latency_ms"] is None and data["size"] == [64, 64]
    assert data["conv_dtype"] == "float32"  # nothing to switch in a weight-free detector
    result = runner.invoke(
        app,
        [
            "info",
            "mim-istd-test",
            "--size",
            "32",
            "--runs",
            "1",
            "--precision",
            "float32",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["conv_dtype"] == "float32"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["nope-model"], "no weights folder"), (["mim-istd-test", "--size", "5x"], "HxW")],
)
def test_cli_info_bad_input_is_one_red_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["info", *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_flops_do_not_depend_on_the_scan_backend() -> None:
    # The fused CPU kernels do the projections inside Numba, out of the counter's sight:
    # counting ran them and reported fewer FLOPs than with the reference backend.
    x = torch.rand(1, 1, 64, 64)
    counts = {}
    for backend in ("auto", "cpu", "reference"):
        model = build_model("mim-istd-test", scan_backend=backend).eval()
        counts[backend] = count_flops(model, x)
        assert {m.backend for m in model.modules() if isinstance(m, SS2D)} == {backend}
    assert counts["auto"] == counts["cpu"] == counts["reference"], counts
    infos = [
        model_info("mim-istd-test", (64, 64), measure=False, scan_backend=b)
        for b in ("cpu", "reference")
    ]
    assert infos[0].gflops == infos[1].gflops


def test_cpu_peak_memory_is_the_increase_over_the_forwards() -> None:
    # Not the process's lifetime peak (torch's import alone is hundreds of MiB).
    info = model_info("tophat", (1, 1), runs=1)
    if info.peak_memory_mb is None:
        pytest.skip("no /proc to measure RSS here")
    assert 0 <= info.peak_memory_mb < 50
    result = CliRunner().invoke(app, ["info", "tophat", "--size", "1x1", "--runs", "1"])
    assert result.exit_code == 0, result.output
    assert "increase" in result.output  # the label says what is measured


class Allocates64MiB(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Above glibc's largest mmap threshold (32 MiB): fresh pages, returned when freed.
        return torch.ones(16 * 2**20).sum() + x


def test_cpu_peak_memory_sees_what_a_forward_allocates() -> None:
    _, peak = time_forward(Allocates64MiB(), torch.zeros(1), runs=1)
    if peak is None:
        pytest.skip("no /proc to measure RSS here")
    assert 60 <= peak < 200


@pytest.mark.parametrize("device", ["foo", "cuda"])
def test_cli_info_unavailable_device_is_one_red_line(device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = CliRunner().invoke(app, ["info", "tophat", "--size", "8", "--device", device])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and device in result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an uncaught error
