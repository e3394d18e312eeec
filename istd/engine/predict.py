"""Predictor: one object that turns infrared frames into probability maps, masks and detections.

Frames larger than the tile size are cut into overlapping tiles; each tile's probabilities are
weighted by a window that falls off linearly across the overlap, and the weighted sums are
divided by the summed weights, so tile seams leave no step in the blended map. Frames of one
size are stacked into batches. The model is put in eval mode and run under
`torch.inference_mode`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from istd.engine.detections import Detection, find_detections
from istd.errors import BackendError, ConfigError, DataError
from istd.models.precision import (
    conv_precision,
    has_dense_convs,
    resolve_precision,
    without_cudnn,
)

log = logging.getLogger(__name__)
MAX_CUDA_GRAPHS = 4  # frame sizes kept captured at a time (each holds its own GPU memory)

__all__ = ["Prediction", "Predictor"]


@dataclass
class Prediction:
    """What the predictor returns for one frame.

    Attributes:
        prob: probability map (H, W) float32 in [0, 1].
        mask: `prob > threshold`, (H, W) bool.
        detections: the mask's 8-connected objects (see `istd.engine.detections`).
    """

    prob: np.ndarray
    mask: np.ndarray
    detections: list[Detection]


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering `size` pixels, the last flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int) -> np.ndarray:
    """1-D blending weights (length,): 1 in the middle, falling linearly over `overlap` at each end."""
    i = np.arange(length, dtype=np.float32)
    ramp = np.minimum((i + 1) / (overlap + 1), (length - i) / (overlap + 1))
    return np.minimum(ramp, 1.0).astype(np.float32)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate one frame and return it as float32 (H, W) in [0, 1].

    uint8 and uint16 frames are scaled by 255 and 65535; float frames must already be in [0, 1].

    Raises:
        DataError: wrong rank, empty, non-finite or out-of-range values, or an unsupported dtype.
    """
    array = np.asarray(image)
    if array.ndim != 2:
        raise DataError(
            f"{name}: expected a greyscale frame of shape (H, W), got shape {array.shape}; "
            "read files with istd.data.io.read_image"
        )
    if array.size == 0:
        raise DataError(f"{name}: empty frame of shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"{name}: expected float32 in [0, 1], uint8 or uint16, got dtype {array.dtype}"
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(f"{name}: the frame contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"{name}: float values must lie in [0, 1], got [{low:.4g}, {high:.4g}]; "
            "divide 8-bit data by 255 and 16-bit data by 65535"
        )
    return array


class Predictor:
    """Segment infrared frames with a network or a weight-free detector.

    Args:
        weights: a weights folder or a name under the repository's `weights/`; the default
            weights (`istd.models.DEFAULT_WEIGHTS`) when both `weights` and `model` are omitted.
        model: a registered weight-free detector name (`tophat`, `mpcm`, ...) or an
            `nn.Module` mapping (B, C, H, W) frames in [0, 1] to logits (B, 1, H, W).
        device: torch device string, e.g. "cpu" or "cuda:0".
        threshold: probability above which a pixel is target, in (0, 1).
        tile: frames with a side longer than this are predicted in tiles of this size.
        overlap: pixels shared by neighbouring tiles, blended linearly; min(64, tile // 4)
            when omitted.
        batch_size: frames (or tiles) per forward pass.
        precision: ``auto`` (bfloat16 dense convolutions on a CPU that multiplies bfloat16
            natively, float32 elsewhere), ``float32`` or ``bfloat16``; see
            `istd.models.precision`.
        input_scale: run the network on frames resized by this factor (0.25-4; compute grows
            with its square); None: the weights' own (`MiMConfig.input_scale`).
        tta: average the probabilities over each frame and its flips
            (`istd.models.tta.FlipTTA`): four times the compute.
        cuda_graphs: on a GPU, capture the network for a batch shape met a third time and
            replay it from then on: MiM-ISTD launches ~1,700 small kernels per forward, and
            launching them costs the CPU several times what the GPU spends running them
            (video frames: 5x faster). No effect on a CPU.

    Raises:
        WeightsError: the weights are missing or unreadable.
        ConfigError: an option is out of range, or both `weights` and `model` are given.
        BackendError: the device is not available.

    Example:
        >>> predictor = Predictor(model="tophat")
        >>> result = predictor(frame)              # frame: (H, W) float32 in [0, 1]
        >>> result.mask.shape, len(result.detections)
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        model: str | nn.Module | None = None,
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        tile: int = 1024,
        overlap: int | None = None,
        batch_size: int = 8,
        precision: str = "auto",
        input_scale: float | None = None,
        tta: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        if weights is not None and model is not None:
            raise ConfigError("give either weights or model, not both")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must lie in (0, 1), got {threshold}")
        if tile < 16:
            raise ConfigError(f"tile must be >= 16 pixels, got {tile}")
        overlap = min(64, tile // 4) if overlap is None else overlap
        if not 0 <= overlap < tile // 2:
            raise ConfigError(f"overlap must lie in [0, tile / 2), got {overlap} for tile {tile}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise BackendError(f"device {str(device)!r} is not available here: {exc}") from None
        self.conv_dtype = resolve_precision(precision, self.device)  # checked before loading
        if isinstance(model, nn.Module):
            self.model = model
            self.weights_id = str(getattr(model, "model_name", type(model).__name__))
        else:
            from istd.models import DEFAULT_WEIGHTS, from_pretrained

            source = model if model is not None else weights
            source = DEFAULT_WEIGHTS if source is None else source
            self.model = from_pretrained(source, device=self.device)
            self.weights_id = Path(str(source)).name if weights is not None else str(source)
        from istd.models import set_input_scale
        from istd.models.tta import FlipTTA

        self.model = set_input_scale(self.model, input_scale).to(self.device).eval()
        self.tta = bool(tta)
        if self.tta:
            self.model = FlipTTA(self.model).eval()
        if not has_dense_convs(self.model):
            self.conv_dtype = torch.float32  # nothing to switch (weight-free detectors)
        config = getattr(self.model, "config", None)
        self.in_chans = int(getattr(config, "in_chans", 1) or 1)
        self.input_scale: float | None = getattr(config, "input_scale", None)  # None: no network
        self.threshold = float(threshold)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.batch_size = int(batch_size)
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self._graphs: OrderedDict[tuple[int, ...], tuple] = OrderedDict()  # shape -> capture
        self._shape_counts: dict[tuple[int, ...], int] = {}  # batches run eagerly, by shape

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a batch; on a GPU, a replayed CUDA graph for a recurring shape.

        A shape's first two batches run eagerly: a capture costs about two forwards, which
        sizes met once or twice (a folder of images of many sizes) would never win back. If
        capturing fails the predictor stays eager."""
        key = tuple(x.shape)
        if self.cuda_graphs and key not in self._graphs:
            seen = self._shape_counts.get(key, 0)
            if seen < 2:
                if len(self._shape_counts) < 10_000:  # bounded bookkeeping
                    self._shape_counts[key] = seen + 1
            else:
                try:
                    self._graphs[key] = self._capture(x)
                except RuntimeError as exc:
                    log.warning("CUDA graph capture failed, running eagerly: %s", exc)
                    self.cuda_graphs = False
                if len(self._graphs) > MAX_CUDA_GRAPHS:
                    self._graphs.popitem(last=False)  # the least recently used shape
        if key not in self._graphs:
            return self.model(x)
        self._graphs.move_to_end(key)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, x: torch.Tensor) -> tuple:
        """Capture the model on inputs shaped like ``x``: (graph, input buffer, output)."""
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # a warm-up on a side stream first, as torch asks
            self.model(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        return graph, static_in, static_out

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a stack of equal-size frames: (B, H, W) -> (B, H, W) float32."""
        self.model.eval()
        out = []
        for start in range(0, len(batch), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(batch[start : start + self.batch_size]))
            x = x.to(self.device, torch.float32).unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
            if self.in_chans != 1:
                x = x.expand(-1, self.in_chans, -1, -1)  # grey -> (B, C, H, W)
            with conv_precision(self.conv_dtype), without_cudnn():
                logits = self._logits(x)
            if logits.shape != (x.shape[0], 1, *x.shape[2:]):
                raise DataError(
                    f"model returned logits of shape {tuple(logits.shape)} for input "
                    f"{tuple(x.shape)}; expected (B, 1, H, W)"
                )
            out.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())  # (B, H, W)
        return np.concatenate(out, axis=0)

    def predict_prob(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Probability maps for frames of one size.

        Args:
            images: (B, H, W) array or a sequence of (H, W) frames (float [0, 1], uint8, uint16).

        Returns:
            float32 (B, H, W) in [0, 1].
        """
        frames = [check_image(im, f"frame {i}") for i, im in enumerate(images)]
        if not frames:
            return np.zeros((0, 0, 0), np.float32)
        shape = frames[0].shape
        for i, f in enumerate(frames):
            if f.shape != shape:
                raise DataError(
                    f"frame {i}: size {f.shape} differs from frame 0's {shape}; batch frames of one size"
                )
        stack = np.stack(frames)  # (B, H, W)
        height, width = shape
        if height <= self.tile and width <= self.tile:
            return self._forward(stack)
        stride = self.tile - self.overlap
        ys = _tile_starts(height, self.tile, stride)
        xs = _tile_starts(width, self.tile, stride)
        th, tw = min(self.tile, height), min(self.tile, width)
        weight = _ramp(th, self.overlap)[:, None] * _ramp(tw, self.overlap)[None, :]  # (th, tw)
        total = np.zeros((len(frames), height, width), np.float32)
        norm = np.zeros((height, width), np.float32)
        for y in ys:
            for x in xs:
                norm[y : y + th, x : x + tw] += weight
        # All tiles of all frames go through the model in batches of equal-size tiles.
        boxes = [(b, y, x) for b in range(len(frames)) for y in ys for x in xs]
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            tiles = np.stack([stack[b, y : y + th, x : x + tw] for b, y, x in chunk])  # (n, th, tw)
            probs = self._forward(tiles)
            for (b, y, x), p in zip(chunk, probs, strict=True):
                total[b, y : y + th, x : x + tw] += p * weight
        return total / norm[None]

    def predict_batch(self, images: Sequence[np.ndarray] | np.ndarray) -> list[Prediction]:
        """Predict frames of one size together (faster than one call per frame)."""
        probs = self.predict_prob(images)
        results = []
        for prob in probs:
            mask = prob > self.threshold
            results.append(Prediction(prob=prob, mask=mask, detections=find_detections(prob, mask)))
        return results

    def __call__(self, image: np.ndarray) -> Prediction:
        """Predict one frame (H, W): float32 in [0, 1], uint8 or uint16."""
        return self.predict_batch([image])[0]
