"""Saving and loading models: safetensors weights plus a JSON config, never pickle.

Layout of a weights folder (after smp's hub mixin and timm's `save_for_hf`)::

    model.safetensors   the state dict
    config.json         {"model": registry name, "config": {...}, "extra": {...}}
    README.md           a model card: architecture, dataset and metrics from `extra`

`from_pretrained` rebuilds the network from config.json alone through the registry, then loads
the tensors after checking every name and shape. A folder holding `ensemble.json` instead
loads the weights folders it names, beside it, as one `istd.models.ensemble.Ensemble`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from istd._atomic import write_atomic
from istd._json import json_safe
from istd.errors import ConfigError, WeightsError
from istd.models._registry import build_model, list_models
from istd.models.ensemble import ENSEMBLE_FILE, load_ensemble

DEFAULT_WEIGHTS = "mim-istd-nuaa-sirst"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


# where a wheel installs the repository's weights/ (pyproject.toml's data-files), under the
# environment's data path (sys.prefix in a virtual environment)
INSTALLED_WEIGHTS = ("share", "istd", "weights")


def weights_dir() -> Path:
    """The folder where named weights live: $ISTD_WEIGHTS_DIR; else the source checkout's
    weights/ (an editable install); else the copy a wheel installed (``pip install .`` or from
    git), in the environment's or the user's data path; else the checkout's path, missing."""
    env = os.environ.get("ISTD_WEIGHTS_DIR")
    if env:
        return Path(env)
    import istd

    checkout = Path(istd.__file__).resolve().parents[1] / "weights"
    if checkout.is_dir():
        return checkout
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        installed = Path(sysconfig.get_path("data", scheme)).joinpath(*INSTALLED_WEIGHTS)
        if installed.is_dir():
            return installed
    return checkout


def _refuse_overwrite(path: Path) -> WeightsError:
    return WeightsError(f"refusing to overwrite {path} (pass overwrite=True)")


def _config_dict(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise WeightsError(f"{type(model).__name__} has no dataclass .config to save")
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value)  # None: an undefined (NaN) metric


def _card(name: str, config: dict[str, Any], extra: dict[str, Any]) -> str:
    lines = [
        f"# {name}",
        "",
        f"Registry model `{name}` for `istd` (infrared small-target detection).",
        "",
    ]
    if "dataset" in extra:
        lines += [f"Trained on: {extra['dataset']}", ""]
    metrics = extra.get("metrics")
    if isinstance(metrics, dict) and metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {_cell(v)} |"
            for k, v in metrics.items()
        ]
        lines.append("")
    lines += ["## Config", "", "```json", json.dumps(config, indent=2), "```", ""]
    lines += ["Load with `istd.models.from_pretrained(<this folder>)`.", ""]
    return "\n".join(lines)


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model.safetensors`, `config.json` and a `README.md` card into `directory`.

    Args:
        model: a registry model with `.model_name` and a dataclass `.config`.
        directory: target folder (created if missing).
        extra: JSON-serialisable metadata (dataset, metrics, training config, ...); NaN and
            infinite floats are written as null.
        overwrite: replace files already in `directory`; without it existing files raise.

    Returns:
        The folder written.

    Raises:
        WeightsError: the model cannot be saved, `extra` is not JSON, or files exist.

    Example:
        >>> save_pretrained(build_model("mim-istd-test"), "runs/toy")
    """
    directory = Path(directory)
    name = getattr(model, "model_name", None)
    if not isinstance(name, str):
        raise WeightsError(
            f"{type(model).__name__} has no .model_name; build it with build_model()"
        )
    extra = json_safe(extra or {})  # undefined (NaN) metrics -> null
    try:
        meta = json.dumps(
            {"model": name, "config": _config_dict(model), "extra": extra},
            indent=2,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"extra metadata for {directory} is not JSON-serialisable: {exc}"
        ) from None
    targets = [directory / f for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise WeightsError(f"refusing to overwrite {', '.join(existing)} (pass overwrite=True)")
    if directory.exists() and not directory.is_dir():
        raise WeightsError(f"{directory} exists and is not a folder: give a folder to save into")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent is a file
        raise WeightsError(f"cannot create the folder {directory}: {exc}") from None
    # Detached, contiguous CPU copies: safetensors rejects views sharing storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    card = _card(name, json.loads(meta)["config"], extra)
    contents = [
        safetensors_bytes(tensors, metadata={"model": name}),
        (meta + "\n").encode(),
        card.encode(),
    ]
    for target, data in zip(targets, contents, strict=True):
        # on_exists: a file that appeared after the check above is still not replaced.
        write_atomic(target, data, overwrite=overwrite, on_exists=_refuse_overwrite)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and validate a weights folder's config.json.

    Returns:
        {"model": str, "config": dict, "extra": dict}.

    Raises:
        WeightsError: missing or malformed file, naming it.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(
            f"{path} not found: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path} must hold a JSON object")
    missing = [k for k in ("model", "config") if k not in data]
    if missing:
        raise WeightsError(f"{path} lacks the key(s) {', '.join(missing)}")
    if not isinstance(data["model"], str) or not isinstance(data["config"], dict):
        raise WeightsError(f"{path}: 'model' must be a string and 'config' an object")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise WeightsError(f"{path}: 'extra' must be an object")
    return {"model": data["model"], "config": data["config"], "extra": extra}


def _load_folder(directory: Path) -> nn.Module:
    if (directory / ENSEMBLE_FILE).is_file():
        return load_ensemble(directory, _load_folder)
    meta = read_config(directory)
    cfg_path = directory / CONFIG_FILE
    if meta["model"] not in list_models():
        raise WeightsError(
            f"{cfg_path} names unknown model {meta['model']!r}; known: {', '.join(list_models())}"
        )
    # build_model also takes device and dtype: from a file they would place the model (e.g. on
    # "meta", leaving nothing loaded), so the file may hold config fields only.
    call_only = sorted({"device", "dtype"} & set(meta["config"]))
    if call_only:
        raise WeightsError(
            f"{cfg_path}: invalid config: {', '.join(call_only)} not allowed, the file holds "
            "config fields only (device is an argument of from_pretrained)"
        )
    try:
        model = build_model(meta["model"], **meta["config"])
    except (ConfigError, TypeError, ValueError) as exc:  # a hand-edited file: never a traceback
        raise WeightsError(f"{cfg_path}: invalid config: {exc}") from None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise WeightsError(f"{weights} not found")
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{weights} is not a readable safetensors file: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        raise WeightsError(f"{weights} does not fit {cfg_path}: {', '.join(parts)}")
    model.load_state_dict(state, strict=True)
    _zero_negligible(model)
    model.pretrained_extra = meta["extra"]  # dataset, metrics, ... for reports
    return model


NEGLIGIBLE = 1e-15  # parameters smaller than this in magnitude are set to zero on load


@torch.no_grad()
def _zero_negligible(model: nn.Module) -> None:
    """Set parameters with |w| < NEGLIGIBLE to zero.

    Training can leave whole layers at 1e-20 to 1e-36 (weight decay under AdaGrad did so to the
    first shipped weights). Such weights cannot change a float32 output next to weights of
    ordinary size, but their products are subnormal numbers, which x86 CPUs process many times
    slower: zeroing them left the NUAA-SIRST weights' logits bit-identical and made inference
    about 12 % faster (320 x 256, batch 8). Resuming a run loads its checkpoint as saved;
    ``istd train --load-from`` starts from the zeroed weights (no difference to training).
    """
    for param in model.parameters():
        if param.is_floating_point():
            param.masked_fill_(param.abs() < NEGLIGIBLE, 0.0)


def _weight_free(name: str) -> nn.Module | None:
    if name not in list_models():
        return None
    model = build_model(name)
    return model if getattr(model, "requires_weights", True) is False else None


def weights_folder(dir_or_name: str | Path) -> Path | None:
    """The folder `from_pretrained` loads `dir_or_name` from: the path itself when it is a
    folder, else a plain name's folder under `weights_dir()`; None for neither (e.g. `tophat`)."""
    path = Path(dir_or_name)
    if path.is_dir():
        return path
    name = str(dir_or_name)
    if _weight_free(name) is not None:  # such names load the detector, as in from_pretrained
        return None
    return weights_dir() / name if is_plain_name(name) and (weights_dir() / name).is_dir() else None


def is_plain_name(name: str) -> bool:
    """A bare name (no path separators, not hidden): looked up among models and weights/."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def from_pretrained(dir_or_name: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """Load a model in eval mode from a weights folder, a named folder under `weights_dir()`, or
    a registered weight-free detector name. An ensemble folder (`ensemble.json`) loads as one
    `istd.models.ensemble.Ensemble` of the weights folders it names.

    Args:
        dir_or_name: a folder path, a weights name (e.g. ``DEFAULT_WEIGHTS``) or e.g. ``tophat``.
        device: where to put the model (default: CPU).

    Returns:
        The model, in eval mode, with `.pretrained_extra` set for loaded weights.

    Raises:
        WeightsError: nothing matches, or the folder is missing files, corrupt or inconsistent.

    Example:
        >>> model = from_pretrained("weights/mim-istd-nuaa-sirst")
    """
    path = Path(dir_or_name)
    if path.is_dir():
        model = _load_folder(path)
    else:
        name = str(dir_or_name)
        plain = is_plain_name(name)
        model = _weight_free(name) if plain else None
        if model is None:
            root = weights_dir()
            if plain and (root / name).is_dir():
                model = _load_folder(root / name)
            elif name == DEFAULT_WEIGHTS:
                raise WeightsError(
                    f"the default weights {DEFAULT_WEIGHTS!r} are not in {root}: reinstall istd "
                    "(a source checkout has them in weights/, a wheel installs them under "
                    "<prefix>/share/istd/weights), set ISTD_WEIGHTS_DIR to a folder holding them, "
                    "pass --weights DIR, or train your own with `istd train ...`"
                )
            elif plain and name in list_models():
                raise WeightsError(
                    f"model {name!r} needs trained weights: pass a weights folder written by "
                    f"`istd train` (or put one under {root})"
                )
            else:
                raise WeightsError(
                    f"no weights folder {name!r} (looked for a folder and under {root}), and no "
                    f"weight-free model of that name; registered models: {', '.join(list_models())}"
                )
    if device is not None:
        model = model.to(device)
    return model.eval()


class HubMixin:
    """Adds ``model.save_pretrained(dir)`` (the function of the same name)."""

    def save_pretrained(
        self, directory: str | Path, extra: dict[str, Any] | None = None, overwrite: bool = False
    ) -> Path:
        """Write this model's weights folder; see :func:`istd.models.hub.save_pretrained`."""
        return save_pretrained(self, directory, extra, overwrite)  # type: ignore[arg-type]
