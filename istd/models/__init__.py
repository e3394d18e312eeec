"""Networks and weight-free detectors, built by name from a registry."""

from istd.models._registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
