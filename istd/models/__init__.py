"""Networks and weight-free detectors, built by name from a registry, saved as safetensors + JSON."""

from istd.models import classical as _classical  # noqa: F401  (registers weight-free detectors)
from istd.models import mim_istd  # noqa: F401  (registers the MiM-ISTD variants)
from istd.models._registry import build_model, list_models, register_model
from istd.models.config import MiMConfig
from istd.models.hub import DEFAULT_WEIGHTS, from_pretrained, save_pretrained, weights_dir
from istd.models.mim_istd import MiMISTD, set_input_scale

__all__ = [
    "DEFAULT_WEIGHTS",
    "MiMConfig",
    "MiMISTD",
    "build_model",
    "from_pretrained",
    "list_models",
    "register_model",
    "save_pretrained",
    "set_input_scale",
    "weights_dir",
]
