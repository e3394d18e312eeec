"""Training configuration: typed dataclasses, YAML files and `--set key=value` overrides.

A run is described by one `TrainConfig` tree. Shipped configs live in `istd/configs/*.yaml`
(one per model x dataset); `load_config` accepts such a name or a YAML path, applies the
overrides with type checking, and raises `ConfigError` naming the key for anything unknown or
mistyped. The defaults follow the optimisation recipe of ACM and DNANet (AdaGrad, lr 0.05,
SoftIoU loss, 256 x 256 crops), which MiM-ISTD's paper reuses, without its weight decay 1e-4
(under AdaGrad it zeroes the SS2D projections; see the shipped configs).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from istd.data.transforms import is_scale_range
from istd.errors import ConfigError
from istd.metrics.metrics import METRIC_NAMES
from istd.models import build_model, list_models
from istd.models.mim_istd import VARIANTS, variant_config

# build_model keywords that training sets itself, and where the user sets them instead.
_RUN_SET_OVERRIDES = {
    "device": "pass --device",
    "dtype": "parameters stay float32; --amp trains in bf16 autocast",
    "norm_mean": "set data.norm_mean",
    "norm_std": "set data.norm_std",
}


@dataclass
class ModelConfig:
    """Which network to build and keyword overrides for its registered config."""

    name: str = "mim-istd"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset location, splits and loading.

    `limit` keeps the first N ids of the training split (and of the validation split unless
    `val_limit` is set), so tests and smoke runs take seconds. A relative `root` is resolved
    against the current directory first, then against the repository checkout.
    """

    root: str = "../shared/datasets/NUAA-SIRST"
    layout: str = "auto"
    train_split: str = "train"
    # None: hold out `val_fraction` of the training ids instead (datasets without a val split).
    val_split: str | None = "val"
    val_fraction: float = 0.1
    limit: int | None = None
    val_limit: int | None = None
    num_workers: int = 0
    # None: computed on the training split (never on validation or test images).
    norm_mean: list[float] | None = None
    norm_std: list[float] | None = None


@dataclass
class AugmentConfig:
    """Training augmentation (`istd.data.train_transform`); validation images stay whole.

    The pipeline pads, crops `crop_size` squares (around a target with probability
    `target_p`, so tiny targets are not cropped away), flips (`hflip_p`, `vflip_p`), rotates
    by 90 degrees (`rot90_p`) and adds mild noise (`noise_p`) and blur (`blur_p`). With
    probability `scale_p` it first resizes the frame by a factor from `scale_range`. With
    probability `paste_p`, before all that, 1 to `paste_max` targets of other training frames
    are pasted into the frame (`istd.data.paste`). Frames smaller than the crop are padded with
    black (`pad_fill: black`, the shipped recipe) or with the normalisation mean (`mean`), the
    fill the network uses itself when it pads a frame at prediction.
    """

    crop_size: int = 256
    target_p: float = 0.8
    noise_p: float = 0.3
    blur_p: float = 0.2
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rot90_p: float = 0.5
    scale_p: float = 0.0
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
    paste_p: float = 0.0
    paste_max: int = 3
    pad_fill: Literal["black", "mean"] = "black"


@dataclass
class OptimConfig:
    """Optimiser. `momentum` is used by none of these; `betas` by Adam and AdamW."""

    name: Literal["adagrad", "adam", "adamw"] = "adagrad"
    lr: float = 0.05
    weight_decay: float = 0.0  # see the shipped configs: AdaGrad's L2 decay zeroes SS2D weights
    # "weights": conv and linear weights only (biases, norms and the scan's A_log and D are
    # left alone, as mamba_ssm and timm do); "all": every parameter, the recipe of
    # the first shipped weights, kept so that runs started with it resume unchanged
    decay: Literal["weights", "all"] = "weights"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None  # max global gradient norm (> 0); None: no clipping


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per optimiser step."""

    name: Literal["cosine", "constant"] = "cosine"
    # at most epochs - 1 are used; see `istd.engine.optim.build_scheduler` and the shipped
    # configs for why AdaGrad needs one
    warmup_epochs: int = 2
    min_lr: float = 1e-5


@dataclass
class LossConfig:
    """Loss on logits (B, 1, H, W) against {0, 1} masks."""

    name: Literal["softiou", "dice", "bce+softiou"] = "softiou"
    bce_weight: float = 1.0
    smooth: float = 1.0
    # SoftIoU / Dice over the whole batch, or per image and averaged (istd.engine.losses).
    reduction: Literal["batch", "image"] = "batch"


@dataclass
class LoopConfig:
    """Epochs, batches, seeding, validation and checkpoint selection."""

    epochs: int = 400
    batch_size: int = 8
    seed: int = 42
    val_every: int = 1
    # Picks best/ on the validation split; the test split is never used for selection.
    # One of istd.metrics.metrics.METRIC_NAMES.
    best_metric: str = "iou"
    best_mode: Literal["max", "min"] = "max"
    # Score each validation by the mean best_metric of the last best_window validations (1: the
    # validation alone); best/ holds the checkpoint ending the best stretch (istd.engine.selection).
    best_window: int = 1
    threshold: float = 0.5
    deterministic: bool = True
    threads: int | None = None
    # Validate and publish an exponential moving average of the weights (decay per optimiser
    # step, e.g. 0.995: about 200 steps of memory), not the last step's weights; None: off.
    ema_decay: float | None = None


@dataclass
class TrainConfig:
    """Everything a training run needs; saved resolved as `config.yaml` in the work dir."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check value ranges the types cannot express.

        Raises:
            ConfigError: naming the first offending key.
        """
        checks = [
            ("train.epochs", self.train.epochs >= 1),
            ("train.batch_size", self.train.batch_size >= 1),
            ("train.val_every", self.train.val_every >= 1),
            ("train.threshold", 0.0 < self.train.threshold < 1.0),
            ("augment.crop_size", self.augment.crop_size >= 1),
            *(
                (f"augment.{name}", 0.0 <= getattr(self.augment, name) <= 1.0)
                for name in (
                    "target_p",
                    "noise_p",
                    "blur_p",
                    "hflip_p",
                    "vflip_p",
                    "rot90_p",
                    "scale_p",
                    "paste_p",
                )
            ),
            ("augment.paste_max", self.augment.paste_max >= 1),
            ("augment.scale_range", is_scale_range(self.augment.scale_range)),
            # math.isfinite: inf passes `> 0` and nan fails every comparison, both train garbage.
            ("optim.lr", math.isfinite(self.optim.lr) and self.optim.lr > 0),
            (
                "optim.weight_decay",
                math.isfinite(self.optim.weight_decay) and self.optim.weight_decay >= 0,
            ),
            ("optim.betas", len(self.optim.betas) == 2),
            ("schedule.warmup_epochs", self.schedule.warmup_epochs >= 0),
            ("schedule.min_lr", 0 <= self.schedule.min_lr <= self.optim.lr),
            ("data.num_workers", self.data.num_workers >= 0),
            ("data.val_fraction", 0.0 < self.data.val_fraction < 1.0),
            ("data.val_split", self.data.val_split != self.data.train_split),
            ("data.limit", self.data.limit is None or self.data.limit >= 1),
            ("data.val_limit", self.data.val_limit is None or self.data.val_limit >= 1),
            ("train.threads", self.train.threads is None or self.train.threads >= 1),
            ("train.best_window", self.train.best_window >= 1),
            (
                "train.ema_decay",
                self.train.ema_decay is None or 0.0 < self.train.ema_decay < 1.0,
            ),
            # clip_grad_norm_ with 0 zeroes every gradient: off is None, not 0.
            (
                "optim.grad_clip",
                self.optim.grad_clip is None
                or (math.isfinite(self.optim.grad_clip) and self.optim.grad_clip > 0),
            ),
        ]
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"invalid value for {key}: {_get(self, key)!r}")
        if self.train.best_metric not in METRIC_NAMES:
            raise ConfigError(
                f"invalid value for train.best_metric: {self.train.best_metric!r}; "
                f"choose one of {', '.join(METRIC_NAMES)}"
            )
        if (self.data.norm_mean is None) != (self.data.norm_std is None):
            raise ConfigError("set both data.norm_mean and data.norm_std, or neither")
        if self.data.norm_std is not None and any(s <= 0 for s in self.data.norm_std):
            raise ConfigError(f"data.norm_std must be positive, got {self.data.norm_std}")
        self._validate_model()

    def _validate_model(self) -> None:
        """Check model.name and model.overrides now, before any data work: the network is
        otherwise built only after the dataset statistics are computed."""
        name, overrides = self.model.name, self.model.overrides
        if name not in list_models():
            raise ConfigError(
                f"invalid value for model.name: {name!r}; known: {', '.join(list_models())}"
            )
        for key, where in _RUN_SET_OVERRIDES.items():
            if key in overrides:
                raise ConfigError(f"invalid key model.overrides.{key}: training sets it ({where})")
        try:
            if name in VARIANTS:
                variant_config(name, **overrides)  # the config alone: no network is built
            else:
                build_model(name, **overrides)  # weight-free detectors: no parameters, instant
        except (ConfigError, TypeError, ValueError) as exc:  # a --set value: never a traceback
            raise ConfigError(f"invalid value for model.overrides: {exc}") from None


def shipped_configs() -> list[str]:
    """Names (without `.yaml`) of the configs shipped in `istd/configs`."""
    folder = resources.files("istd") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_from_saved(raw: dict[str, Any], source: str = "config.yaml") -> TrainConfig:
    """`config_from_dict` for a config a run saved (a work dir's `config.yaml`, a release's
    `train_config.yaml`): keys added since then get the behaviour that run had, where the
    default changed (a missing `optim.decay` means "all").
    """
    if isinstance(raw, dict) and isinstance(raw.get("optim"), dict):
        raw = {**raw, "optim": {"decay": "all", **raw["optim"]}}
    return config_from_dict(raw, source)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a `TrainConfig` from a nested dict, checking every key and type.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the key and `source`.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    return _build(TrainConfig, raw, "", source)


def load_config(name_or_path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a shipped config by name or a YAML file, then apply `key=value` overrides.

    Args:
        name_or_path: a shipped name (`mim-istd_nuaa-sirst`), a YAML path, or None for defaults.
        overrides: strings such as `"optim.lr=0.01"`; values are parsed as YAML scalars.

    Returns:
        The validated config.

    Raises:
        ConfigError: unknown config name, unreadable YAML, unknown key or wrong type.

    Example:
        >>> cfg = load_config("mim-istd_nuaa-sirst", ["data.limit=4", "train.epochs=2"])
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if name_or_path is not None:
        path = _resolve_config_path(name_or_path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        raw = loaded if loaded is not None else {}
    cfg = config_from_dict(raw, source)
    for item in overrides or []:
        apply_override(cfg, item)
    cfg.validate()
    return cfg


def apply_override(cfg: TrainConfig, item: str) -> None:
    """Apply one `section.key=value` override in place, with the same type checks as YAML.

    Raises:
        ConfigError: malformed item, unknown key (listing the valid ones) or wrong type.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.01")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from None
    parts = key.split(".")
    target: Any = cfg
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(target):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])} is not a section")
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            where = ".".join(parts[:depth]) or "top level"
            raise ConfigError(
                f"--set {key}: unknown key {part!r} in {where}; valid: {', '.join(names)}"
            )
        if depth < len(parts) - 1:
            child = getattr(target, part)
            if isinstance(child, dict) and depth == len(parts) - 2:
                # a free-form mapping (model.overrides): its keys are checked where it is used
                setattr(target, part, {**child, parts[-1]: value})
                return
            target = child
    hints = typing.get_type_hints(type(target))
    leaf = parts[-1]
    if dataclasses.is_dataclass(getattr(target, leaf)):
        raise ConfigError(f"--set {key}: is a section; set one of its keys, e.g. {key}.<name>")
    setattr(target, leaf, _check(value, hints[leaf], key, "--set"))


def _resolve_config_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    shipped = resources.files("istd") / "configs" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = ", ".join(shipped_configs()) or "(none)"
        raise ConfigError(
            f"unknown config {str(name_or_path)!r}: not a file and not shipped; shipped: {known}"
        )
    return Path(str(shipped))


def _build(cls: type, raw: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = prefix + str(unknown[0])
        raise ConfigError(f"{source}: unknown key {key!r}; valid here: {', '.join(names)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{name} must be a mapping")
            kwargs[name] = _build(hint, value, f"{prefix}{name}.", source)
        else:
            kwargs[name] = _check(value, hint, prefix + name, source)
    return cls(**kwargs)


def _check(value: Any, hint: Any, key: str, source: str) -> Any:
    """Return `value` converted to `hint` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{source}: {key} must be one of {', '.join(map(str, args))}; got {value!r}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_check(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept what Python reads as a float.
        try:
            return float(value)
        except ValueError:
            pass
    # bool is an int subclass: `epochs: true` must not pass as 1.
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{source}: {key} must be {hint.__name__}, got {value!r} ({type(value).__name__})"
    )


def _get(cfg: TrainConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def save_config(cfg: TrainConfig) -> str:
    """YAML text of the resolved config (what the work dir's `config.yaml` holds)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
