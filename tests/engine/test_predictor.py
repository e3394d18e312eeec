"""Predictor: probabilities, masks, detections, batching and blended tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from istd.engine.predict import Predictor, _ramp, _tile_starts
from istd.errors import BackendError, ConfigError, DataError


class BrightSpot(nn.Module):
    """Logit = 40 * (x - 0.5): a pixel brighter than 0.5 is a target. Pixel-local, so tiling is exact."""

    model_name = "bright-spot"

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training, "predictor must set eval mode"
        return self.scale * (x[:, :1] - 0.5)


class BoxBlur(nn.Module):
    """3 x 3 mean filter with zero padding: its tile borders differ, so blending matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * (nn.functional.avg_pool2d(x[:, :1], 3, stride=1, padding=1) - 0.25)


def _frame(h: int = 40, w: int = 50) -> np.ndarray:
    frame = np.full((h, w), 0.1, np.float32)
    frame[5:8, 6:9] = 0.9
    frame[30, 40] = 0.8
    return frame


def test_call_returns_prob_mask_detections() -> None:
    predictor = Predictor(model=BrightSpot().train())
    result = predictor(_frame())
    assert result.prob.shape == (40, 50) and result.prob.dtype == np.float32
    assert result.mask.dtype == bool and result.mask.sum() == 10
    assert [(d.area, d.x, d.y) for d in result.detections] == [(9, 6, 5), (1, 40, 30)]
    assert result.detections[0].score == pytest.approx(1 / (1 + np.exp(-16)), rel=1e-5)
    assert predictor.weights_id == "bright-spot"


def test_uint_inputs_and_tiny_images() -> None:
    predictor = Predictor(model=BrightSpot())
    u8 = (_frame() * 255).astype(np.uint8)
    u16 = (_frame() * 65535).astype(np.uint16)
    assert (predictor(u8).mask == predictor(u16).mask).all()
    one = predictor(np.ones((1, 1), np.float32))
    assert one.mask.shape == (1, 1) and len(one.detections) == 1


def test_batch_equals_single() -> None:
    predictor = Predictor(model=BoxBlur(), batch_size=2)
    frames = np.stack([_frame(), _frame()[::-1].copy(), np.zeros((40, 50), np.float32)])
    batch = predictor.predict_batch(frames)
    for frame, res in zip(frames, batch, strict=True):
        np.testing.assert_allclose(res.prob, predictor(frame).prob, atol=1e-6)


def test_tiles_blend_without_seams() -> None:
    rng = np.random.default_rng(0)
    frame = rng.random((70, 90)).astype(np.float32)
    whole = Predictor(model=BrightSpot(), tile=1024)(frame).prob
    tiled = Predictor(model=BrightSpot(), tile=32, overlap=8)(frame).prob
    np.testing.assert_allclose(tiled, whole, atol=1e-6)  # pixel-local model: exact
    # A model with a receptive field: blended tiles stay close to the whole-frame answer
    # away from the image border, and the blend is a weighted mean (bounded by [0, 1]).
    blur_whole = Predictor(model=BoxBlur())(frame).prob
    blur_tiled = Predictor(model=BoxBlur(), tile=32, overlap=8)(frame).prob
    assert blur_tiled.min() >= 0 and blur_tiled.max() <= 1
    assert np.abs(blur_tiled - blur_whole)[1:-1, 1:-1].max() < 0.35
    assert np.median(np.abs(blur_tiled - blur_whole)) < 1e-6


def test_tile_helpers() -> None:
    assert _tile_starts(10, 16, 8) == [0]
    assert _tile_starts(40, 16, 12) == [0, 12, 24]
    assert _tile_starts(41, 16, 12) == [0, 12, 24, 25]
    ramp = _ramp(16, 4)
    assert ramp.max() == 1 and ramp[0] == pytest.approx(0.2) and ramp[-1] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 3), np.float32), "shape"),
        (np.zeros((0, 4), np.float32), "empty"),
        (np.full((4, 4), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (np.zeros((4, 4), np.int32), "dtype"),
    ],
)
def test_bad_input_raises(bad: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        Predictor(model=BrightSpot())(bad)


def test_overlap_follows_small_tiles_and_bad_device() -> None:
    assert Predictor(model=BrightSpot(), tile=100).overlap == 25
    assert Predictor(model=BrightSpot()).overlap == 64
    with pytest.raises(BackendError, match="not-a-device"):
        Predictor(model=BrightSpot(), device="not-a-device")


def test_mixed_sizes_in_batch_raise() -> None:
    with pytest.raises(DataError, match="one size"):
        Predictor(model=BrightSpot()).predict_batch([_frame(), _frame(35, 45)])


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 1.0}, {"tile": 8}, {"overlap": 600}, {"batch_size": 0}]
)
def test_bad_options(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Predictor(model=BrightSpot(), **kwargs)


def test_input_scale_overrides_the_network_s_own() -> None:
    from istd.models import build_model

    torch.manual_seed(0)
    network = build_model("mim-istd-test", scan_backend="reference")
    frame = _frame(37, 50)
    native = Predictor(model=network, precision="float32")
    assert native.input_scale == 1.0
    prob = native.predict_prob(frame[None])
    scaled = Predictor(model=network, precision="float32", input_scale=2.0)
    assert scaled.input_scale == 2.0 and network.config.input_scale == 2.0
    zoomed = scaled.predict_prob(frame[None])
    assert zoomed.shape == prob.shape and not np.allclose(zoomed, prob)
    with pytest.raises(ConfigError, match="input_scale"):
        Predictor(model=network, input_scale=0.1)
    with pytest.raises(ConfigError, match="'tophat' has none"):
        Predictor(model="tophat", input_scale=1.5)
    assert Predictor(model="tophat").input_scale is None


def test_tta_averages_over_flips() -> None:
    from istd.models import build_model
    from istd.models.tta import FlipTTA

    torch.manual_seed(0)
    network = build_model("mim-istd-test", scan_backend="reference")
    frame = _frame(37, 50)
    plain = Predictor(model=network, precision="float32")
    assert not plain.tta
    flipped = Predictor(model=network, precision="float32", tta=True)
    assert flipped.tta and flipped.input_scale == 1.0
    expected = torch.sigmoid(FlipTTA(network).eval()(torch.from_numpy(frame)[None, None]))
    prob = flipped.predict_prob(frame[None])
    assert np.allclose(prob[0], expected[0, 0].detach().numpy(), atol=1e-5)
    assert not np.allclose(prob, plain.predict_prob(frame[None]), atol=1e-3)
    # Weight-free detectors take it too; a symmetric one is unchanged by it.
    blur = Predictor(model=BoxBlur(), tta=True).predict_prob(frame[None])
    assert np.allclose(blur, Predictor(model=BoxBlur()).predict_prob(frame[None]), atol=1e-5)


def test_precision_is_checked_before_the_weights_load() -> None:
    assert Predictor(model=BrightSpot(), precision="float32").conv_dtype == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        Predictor(weights="no-such-weights", precision="fp8")


def test_precision_leaves_a_passed_model_as_it_was() -> None:
    from istd.models import build_model
    from istd.models.precision import native_bfloat16

    if not native_bfloat16():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16, AMX)")
    torch.manual_seed(0)
    model = build_model("mim-istd-test").eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        exact = model(x)
        fast = Predictor(model=model, precision="bfloat16")._forward(x[:, 0].numpy())
        assert torch.equal(model(x), exact)  # nothing stored on the model
    assert not np.array_equal(fast, torch.sigmoid(exact)[:, 0].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_match_eager() -> None:
    """A recurring batch shape is captured once and replayed with each batch's own frames."""
    from istd.models import build_model

    torch.manual_seed(0)
    model = build_model("mim-istd-test")
    eager = Predictor(model=model, device="cuda", cuda_graphs=False)
    graphed = Predictor(model=model, device="cuda")
    rng = np.random.default_rng(0)
    for _ in range(4):  # eager, eager, capture, replay
        frames = rng.random((2, 40, 56), dtype=np.float32)
        np.testing.assert_allclose(
            graphed.predict_prob(frames), eager.predict_prob(frames), atol=1e-5
        )
    assert list(graphed._graphs) == [(2, 1, 40, 56)]
