"""Networks and weight-free detectors, built by name from a registry."""

from istd.models import classical as _classical  # noqa: F401  (registers weight-free detectors)
from istd.models._registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
