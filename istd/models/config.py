"""MiM-ISTD configuration: one dataclass that round-trips through JSON.

The fields are the hyperparameters of the network in Chen et al., "Mamba-in-Mamba for Efficient
Infrared Small Target Detection" (IEEE TGRS 2024, arXiv 2403.02148), plus the scan and inner-path
switches of the ablation (`scan`: VMamba / Vim / LocalMamba / GroupMamba orders; `inner`: Mamba,
conv or none) and the input normalisation that training measures on its training split.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from istd.errors import ConfigError

SCANS = ("cross", "bidirectional", "local", "grouped")
INNERS = ("mamba", "conv", "none")
SCAN_BACKENDS = ("auto", "reference", "cpu", "triton")

_INTS = ("in_chans", "stem_dim", "d_state", "expand", "local_window")
_INT_SEQUENCES = ("depths", "dims", "word_dims", "inner_depths")
_SEQUENCES = (*_INT_SEQUENCES, "norm_mean", "norm_std")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is not a size


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")


@dataclass
class MiMConfig:
    """Hyperparameters of a MiM-ISTD network.

    Attributes:
        in_chans: input channels (1 for infrared, 3 supported).
        stem_dim: channels of the stride-2 stem map shared by words and sentences.
        depths: blocks per encoder stage.
        dims: sentence (outer token) dimension per stage.
        word_dims: word (inner token) dimension per stage; each sentence holds 4 x 4 words.
        inner_depths: per stage, how many leading blocks run the inner (word) path.
        ffn: whether blocks have the convolutional FFN after each SS2D.
        scan: 2-D scan order of every SS2D: cross, bidirectional, local or grouped.
        inner: word path: mamba (SS2D over each sentence's words), conv, or none.
        scan_backend: selective-scan backend: auto, reference, cpu or triton.
        d_state: state size N of the selective scan.
        expand: SS2D inner width = expand * dim.
        local_window: tile size of the local scan order.
        head_dropout: dropout before the final 1 x 1 conv.
        norm_mean: per-channel mean (1 or in_chans values) subtracted inside forward.
        norm_std: per-channel std (1 or in_chans values) divided inside forward.
        input_scale: the network runs on the frame resized by this factor and its logits are
            resized back. The head predicts at a quarter of the input resolution, so targets of
            a few pixels span less than one output cell at 1.0; above 1 they span more, at
            input_scale ** 2 times the compute.
        head_stride: resolution of the logit map, 4 (the paper's head, at H/4), 2: one more
            decoder stage, fed by the stem's H/2 map, corrects the H/4 logits at H/2 (9.63
            GFLOPs at 512 x 512 against 8.13, `istd.models.info.count_flops`; input_scale 1.5
            costs 18.3), or 1: a third, fed by a conv of the frame, corrects them again at H
            (11.0 GFLOPs). Each added head's last layer starts at zero, so weights trained at a
            coarser stride fine-tune from where they were.
    """

    in_chans: int = 1
    stem_dim: int = 8
    depths: tuple[int, ...] = (2, 2, 2, 2)
    dims: tuple[int, ...] = (32, 64, 128, 256)
    word_dims: tuple[int, ...] = (4, 8, 16, 32)
    inner_depths: tuple[int, ...] = (1, 1, 1, 1)
    ffn: bool = True
    scan: str = "cross"
    inner: str = "mamba"
    scan_backend: str = "auto"
    d_state: int = 16
    expand: int = 2
    local_window: int = 2
    head_dropout: float = 0.1
    norm_mean: tuple[float, ...] = field(default=(0.0,))
    norm_std: tuple[float, ...] = field(default=(1.0,))
    input_scale: float = 1.0
    head_stride: int = 4

    def __post_init__(self) -> None:
        for name in _SEQUENCES:
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                value = (value,)
            if isinstance(value, (list, tuple)):  # JSON lists; anything else fails validate()
                setattr(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Check every field's type, then its range; raise ConfigError naming the first bad one.

        Types are checked first so that a wrong type (``in_chans="3"`` from a JSON file or a
        ``--set``) is reported as such, not as a TypeError from a comparison or from torch.
        """
        for name in _INTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _bad(name, "an int >= 1", value)
        for name in _SEQUENCES:
            value = getattr(self, name)
            ok = _is_int if name in _INT_SEQUENCES else _is_finite
            if not isinstance(value, (list, tuple)) or not all(ok(v) for v in value):
                kind = "ints" if name in _INT_SEQUENCES else "finite numbers"
                raise _bad(name, f"a sequence of {kind}", value)
        if not isinstance(self.ffn, bool):
            raise _bad("ffn", "a bool (true or false)", self.ffn)
        for name, allowed in (("scan", SCANS), ("inner", INNERS), ("scan_backend", SCAN_BACKENDS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise _bad(name, f"one of {', '.join(allowed)}", value)
        if not _is_finite(self.head_dropout) or not 0.0 <= self.head_dropout < 1.0:
            raise _bad("head_dropout", "a number in [0, 1)", self.head_dropout)
        if not _is_finite(self.input_scale) or not 0.25 <= self.input_scale <= 4.0:
            raise _bad("input_scale", "a number in [0.25, 4]", self.input_scale)
        if not _is_int(self.head_stride) or self.head_stride not in (1, 2, 4):
            raise _bad("head_stride", "1, 2 or 4", self.head_stride)
        stages = len(self.depths)
        if stages < 1:
            raise ConfigError("depths must name at least one stage")
        for name in ("dims", "word_dims", "inner_depths"):
            if len(getattr(self, name)) != stages:
                raise ConfigError(
                    f"{name} has {len(getattr(self, name))} entries but depths has {stages}"
                )
        if any(d < 1 for d in self.depths):
            raise ConfigError(f"depths must be >= 1, got {self.depths}")
        if any(not 0 <= n <= d for n, d in zip(self.inner_depths, self.depths, strict=True)):
            raise ConfigError(
                f"inner_depths {self.inner_depths} must lie in 0..depths {self.depths}"
            )
        if any(d < 2 or d % 2 for d in self.dims):
            raise ConfigError(f"dims must be even and >= 2, got {self.dims}")
        if any(b != 2 * a for a, b in zip(self.dims[:-1], self.dims[1:], strict=True)):
            raise ConfigError(
                f"dims must double from stage to stage (patch merging), got {self.dims}"
            )
        if any(d < 1 for d in self.word_dims):
            raise ConfigError(f"word_dims must be >= 1, got {self.word_dims}")
        if self.scan == "grouped":
            widths = [self.expand * d for d in self.dims]
            if self.inner == "mamba":
                widths += [self.expand * w for w in self.word_dims]
            if any(w % 4 for w in widths):
                raise ConfigError(f"scan 'grouped' needs expand * dim divisible by 4, got {widths}")
        for name in ("norm_mean", "norm_std"):
            if len(getattr(self, name)) not in (1, self.in_chans):
                raise ConfigError(f"{name} needs 1 or in_chans={self.in_chans} values")
        if any(s <= 0 for s in self.norm_std):
            raise ConfigError(f"norm_std must be > 0, got {self.norm_std}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiMConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown MiMConfig fields: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid MiMConfig values: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> MiMConfig:
        """Rebuild from :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> MiMConfig:
        """Copy with some fields replaced (validated); unknown names raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown MiMConfig fields: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            return dataclasses.replace(self, **overrides)
        except (TypeError, ValueError) as exc:  # validate() should catch all; never a traceback
            raise ConfigError(f"invalid MiMConfig values {overrides}: {exc}") from None
