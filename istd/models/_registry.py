"""Name -> entry-function registry for networks and weight-free detectors (as in timm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from istd.errors import ConfigError

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register an entry function that builds a model from keyword overrides."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODEL_ENTRYPOINTS:
            raise ValueError(f"model {name!r} is already registered")
        _MODEL_ENTRYPOINTS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODEL_ENTRYPOINTS)


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model by name; keyword overrides replace its config fields.

    Raises:
        ConfigError: the name is unknown; the message lists the known names.
    """
    if name not in _MODEL_ENTRYPOINTS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODEL_ENTRYPOINTS[name](**overrides)
