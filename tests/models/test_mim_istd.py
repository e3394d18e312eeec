"""MiM-ISTD network: any input size, every parameter trained, variants, backends, size."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from istd.engine.checkpoint import load_weights
from istd.errors import DataError, WeightsError
from istd.models import build_model, list_models
from istd.models.config import INNERS, SCANS
from istd.ops import available_backends

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The fused CPU kernel makes full-size forwards fast; the reference loops over L in Python.
HAS_CPU_SCAN = (
    "cpu" in available_backends() and importlib.util.find_spec("istd.ops.scan_cpu") is not None
)
FAST_BACKEND = "auto" if DEVICE == "cuda" or HAS_CPU_SCAN else "reference"


def fast_enough() -> bool:
    """Whether full-size networks run fast here (a fused scan backend exists)."""
    return FAST_BACKEND != "reference"


NETWORKS = [n for n in list_models() if n.startswith("mim-istd")]
needs_fast_scan = pytest.mark.skipif(
    not fast_enough(), reason="full-size networks need the fused cpu scan"
)


def _build(name: str, **kw) -> torch.nn.Module:
    # weights and inputs come from the CPU generator, so a GPU run tests the same numbers (a
    # small ReLU layer that is dead for one random draw has no gradient, on any device)
    torch.manual_seed(0)
    return build_model(name, scan_backend=kw.pop("scan_backend", FAST_BACKEND), **kw).to(DEVICE)


def _image(*shape: int) -> torch.Tensor:
    """A random batch from the CPU generator, on DEVICE."""
    return torch.rand(*shape).to(DEVICE)


def _dead_parameters(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


@pytest.mark.parametrize("name", list_models())
def test_registry_model_runs_on_odd_size(name: str) -> None:
    """Every registered model (network or detector) maps (B, C, 7, 13) to finite logits."""
    if name in ("mim-istd", "mim-istd-s") and not fast_enough():
        pytest.skip("full-size networks need the fused cpu scan")
    model = build_model(name, **({"scan_backend": FAST_BACKEND} if name in NETWORKS else {}))
    model = model.to(DEVICE).eval()
    assert isinstance(model.model_name, str) and model.config is not None
    with torch.inference_mode():
        y = model(_image(2, model.config.in_chans, 7, 13))
    assert y.shape == (2, 1, 7, 13) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NETWORKS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    if name != "mim-istd-test" and not fast_enough():
        pytest.skip("full-size networks need the fused cpu scan")
    model = _build(name).train()
    # 130 x 70 pads to 192 x 128: the deepest sentence grid is 3 x 2, so even its state matrix A
    # matters (on a 1 x 1 grid the scan has one step and A gets no gradient).
    x = _image(2, 1, 130, 70) if name != "mim-istd-test" else _image(2, 1, 37, 50)
    model(x).square().mean().backward()
    assert _dead_parameters(model) == []


@needs_fast_scan
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (96, 135), (240, 320), (512, 640)])
def test_output_matches_input_size(size: tuple[int, int]) -> None:
    model = _build("mim-istd").eval()
    with torch.inference_mode():
        y = model(_image(1, 1, *size))
    assert y.shape == (1, 1, *size) and torch.isfinite(y).all()


def test_eval_mode_is_deterministic() -> None:
    model = _build("mim-istd-test").eval()
    x = _image(1, 1, 33, 47)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("inner", INNERS)
def test_every_scan_and_inner_variant_trains(scan: str, inner: str) -> None:
    model = _build("mim-istd-test", scan=scan, inner=inner, scan_backend="reference").train()
    x = _image(2, 1, 37, 50)  # pads to 48 x 64: deepest grid 3 x 4
    y = model(x)
    assert y.shape == (2, 1, 37, 50)
    y.sum().backward()
    assert _dead_parameters(model) == []


def test_inner_variants_differ_in_structure() -> None:
    counts = {
        i: sum(p.numel() for p in _build("mim-istd-test", inner=i).parameters()) for i in INNERS
    }
    assert counts["none"] < counts["conv"] < counts["mamba"]


@needs_fast_scan
def test_cpu_and_reference_backends_agree() -> None:
    torch.manual_seed(0)
    model = build_model("mim-istd", scan_backend="reference").eval()
    fast = build_model("mim-istd", scan_backend="cpu").eval()
    fast.load_state_dict(model.state_dict())
    x = torch.rand(1, 1, 40, 56)
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    diff = (ref - got).abs().max().item()
    assert diff < 1e-4, f"max |cpu - reference| = {diff:.3g}"


def test_parameter_count_matches_the_paper() -> None:
    n = sum(p.numel() for p in build_model("mim-istd", in_chans=3).parameters())
    assert abs(n - 4.86e6) / 4.86e6 < 0.05, n


def test_three_channel_input_and_normalisation() -> None:
    model = _build(
        "mim-istd-test",
        in_chans=3,
        norm_mean=(0.1, 0.2, 0.3),
        norm_std=(0.5,),
        scan_backend="reference",
    )
    model.eval()
    x = _image(1, 3, 20, 24)
    with torch.inference_mode():
        y = model(x)
        model.set_normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        y2 = model(x)
    assert y.shape == (1, 1, 20, 24) and not torch.equal(y, y2)
    assert model.config.norm_std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("scale", [1.5, 0.5])
def test_input_scale_runs_the_network_on_the_resized_frame(scale: float) -> None:
    native = _build("mim-istd-test", scan_backend="reference").eval()
    scaled = _build("mim-istd-test", scan_backend="reference", input_scale=scale).eval()
    scaled.load_state_dict(native.state_dict())
    x = _image(2, 1, 37, 50)
    size = (round(37 * scale), round(50 * scale))
    with torch.inference_mode():
        y = scaled(x)
        small = scale < 1  # shrinking averages (antialias), as cv2's INTER_AREA would
        resized = F.interpolate(x, size=size, mode="bilinear", antialias=small)
        expected = F.interpolate(native(resized), size=(37, 50), mode="bilinear")
    assert y.shape == (2, 1, 37, 50)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_head_stride_2_corrects_the_quarter_head_at_half_resolution() -> None:
    model = _build("mim-istd-test", scan_backend="reference", head_stride=2).train()
    seen = {}
    model.fine_head.register_forward_hook(lambda _m, _i, out: seen.update(shape=out.shape))
    x = _image(2, 1, 37, 50)  # pads to 48 x 64
    torch.nn.init.normal_(model.fine_head.out.weight)  # it starts at zero: nothing behind it learns
    y = model(x)
    assert seen["shape"] == (2, 1, 24, 32) and y.shape == (2, 1, 37, 50)
    y.square().mean().backward()
    assert _dead_parameters(model) == []  # the stem skip and the extra stage train too


def test_head_stride_2_starts_as_the_weights_it_loads() -> None:
    plain = _build("mim-istd-test", scan_backend="reference").eval()
    fine = _build("mim-istd-test", scan_backend="reference", head_stride=2).eval()
    load_weights(fine, plain.state_dict(), "plain")  # its new layers may be missing
    x = _image(2, 1, 37, 50)
    with torch.inference_mode():
        torch.testing.assert_close(fine(x), plain(x), rtol=1e-5, atol=1e-5)
    extra = set(fine.state_dict()) - set(plain.state_dict())
    assert {k.split(".")[0] for k in extra} == {"stem_skip", "fine", "fine_head"}
    # The other way, or a missing layer that is not new, is still an error.
    with pytest.raises(WeightsError, match="unexpected"):
        load_weights(plain, fine.state_dict(), "fine")
    partial = {k: v for k, v in plain.state_dict().items() if not k.startswith("head.")}
    with pytest.raises(WeightsError, match="head.conv"):
        load_weights(fine, partial, "partial")


def test_head_stride_1_adds_a_full_resolution_correction() -> None:
    model = _build("mim-istd-test", scan_backend="reference", head_stride=1).train()
    seen = {}
    model.finest_head.register_forward_hook(lambda _m, _i, out: seen.update(shape=out.shape))
    x = _image(2, 1, 37, 50)  # pads to 48 x 64
    for head in (model.fine_head, model.finest_head):  # both start at zero
        torch.nn.init.normal_(head.out.weight)
    y = model(x)
    assert seen["shape"] == (2, 1, 48, 64) and y.shape == (2, 1, 37, 50)
    y.square().mean().backward()
    assert _dead_parameters(model) == []  # the frame's skip and both extra stages train too


def test_head_stride_1_starts_as_the_half_resolution_weights_it_loads() -> None:
    half = _build("mim-istd-test", scan_backend="reference", head_stride=2).eval()
    torch.nn.init.normal_(half.fine_head.out.weight)  # a trained H/2 head is not zero
    full = _build("mim-istd-test", scan_backend="reference", head_stride=1).eval()
    load_weights(full, half.state_dict(), "half")
    x = _image(2, 1, 37, 50)
    with torch.inference_mode():
        torch.testing.assert_close(full(x), half(x), rtol=1e-5, atol=1e-5)
    extra = set(full.state_dict()) - set(half.state_dict())
    assert {k.split(".")[0] for k in extra} == {"input_skip", "finest", "finest_head"}


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (1, 1, 0, 8), (8, 8)])
def test_bad_input_shape_raises_data_error(shape: tuple[int, ...]) -> None:
    model = _build("mim-istd-test", scan_backend="reference").eval()
    with pytest.raises(DataError, match="model input must be"):
        model(_image(*shape))


def test_untrained_network_starts_at_the_target_prior() -> None:
    # From sigmoid(0) = 0.5 SoftIoU training stalls; the head starts every pixel near 1 %.
    model = build_model("mim-istd-test").eval()
    with torch.inference_mode():
        prob = torch.sigmoid(model(torch.rand(1, 1, 64, 96)))
    assert 0.002 < prob.mean().item() < 0.05
