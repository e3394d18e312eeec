"""Ensembles: the mean of several networks' probabilities, loaded from a folder that names them.

Networks trained differently (another head, another input scale) make different mistakes:
their false alarms on clutter rarely coincide, while a real target lights up in each. Averaging
their probabilities keeps the targets and thins the false alarms, for the sum of their
compute.

An ensemble folder holds `ensemble.json` instead of weights::

    {"members": ["mim-istd-nuaa-sirst-x1.5", "mim-istd-nuaa-sirst-h2"]}

Each member is a weights folder beside it, named without a path (so nothing outside the
weights folder's parent is read), loaded as `from_pretrained` loads any folder; each keeps its
own normalisation and input scale, unless its entry names another::

    {"members": ["mim-istd-nuaa-sirst-x1.5", {"name": "mim-istd-nuaa-sirst-h2", "input_scale": 1.25}]}

(one network seen at several scales is an ensemble too: its errors move with the scale.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from istd.errors import ConfigError, WeightsError
from istd.models.tta import logit_of_mean

__all__ = [
    "ENSEMBLE_FILE",
    "Ensemble",
    "EnsembleConfig",
    "EnsembleMember",
    "ensemble_members",
    "load_ensemble",
]

ENSEMBLE_FILE = "ensemble.json"


@dataclass(frozen=True)
class EnsembleMember:
    """An entry of `ensemble.json`: a weights folder beside the ensemble's and the input scale it
    runs at there (None: the weights' own). Written `name` or `name@scale` in labels and CLIs."""

    name: str
    input_scale: float | None = None

    def __str__(self) -> str:
        return self.name if self.input_scale is None else f"{self.name}@{self.input_scale:g}"

    @classmethod
    def parse(cls, text: str) -> EnsembleMember:
        """`name` or `name@scale`, as `str` writes it.

        Raises:
            ConfigError: a scale that is not a number in [0.25, 4].
        """
        name, sep, scale = text.partition("@")
        if not sep:
            return cls(name)
        try:
            value = float(scale)
        except ValueError:
            value = math.nan
        if not _is_scale(value):
            raise ConfigError(f"ensemble member {text!r}: the scale after '@' must be in [0.25, 4]")
        return cls(name, value)

    def to_json(self) -> str | dict[str, Any]:
        """The entry as `ensemble.json` holds it: the bare name where the scale is the weights'."""
        if self.input_scale is None:
            return self.name
        return {"name": self.name, "input_scale": self.input_scale}


def _is_scale(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.25 <= value <= 4.0
    )


@dataclass(frozen=True)
class EnsembleConfig:
    """What code reading a network's `config` needs: its members' labels (`name` or
    `name@scale`) and input channels.

    `input_scale` is None: each member runs at its own (`MiMConfig.input_scale`) or the one its
    entry names.
    """

    members: tuple[str, ...]
    in_chans: int = 1
    input_scale: None = None


class Ensemble(nn.Module):
    """Logits of the mean probability of `members` (each maps (B, C, H, W) to (B, 1, H, W)).

    Args:
        members: two or more networks taking the same input channels.
        names: one label per member (`str(EnsembleMember)`), kept in `config.members`.
        model_name: the ensemble's name in reports.
    """

    requires_weights = True

    def __init__(
        self, members: Sequence[nn.Module], names: Sequence[str], model_name: str = "ensemble"
    ) -> None:
        super().__init__()
        if len(members) < 2 or len(members) != len(names):
            raise WeightsError(
                f"an ensemble needs two or more members, one name each; got {len(members)} "
                f"members and {len(names)} names"
            )
        chans = {int(getattr(getattr(m, "config", None), "in_chans", 1)) for m in members}
        if len(chans) != 1:
            raise WeightsError(
                f"ensemble members {', '.join(names)} take different input channels "
                f"({sorted(chans)}): they cannot share one frame"
            )
        self.members = nn.ModuleList(members)
        self.config = EnsembleConfig(tuple(names), in_chans=chans.pop())
        self.model_name = model_name

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, 1, H, W) of the members' mean probability for frames (B, C, H, W)."""
        return logit_of_mean([torch.sigmoid(member(x).float()) for member in self.members])


def ensemble_members(folder: Path) -> list[EnsembleMember]:
    """The members that `folder/ensemble.json` lists, checked.

    Raises:
        WeightsError: unreadable JSON, no list of two or more entries, an entry that is not a
            plain name (no path separators, not hidden) or `{"name": ..., "input_scale": ...}`
            with a scale in [0.25, 4], a member that is not a folder beside `folder`, or the
            same member at the same scale twice.
    """
    path = folder / ENSEMBLE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} is not readable JSON: {exc}") from None
    entries = data.get("members") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise WeightsError(f"{path}: 'members' must list two or more weights folder names")
    members = [_member(entry, path) for entry in entries]
    for member in members:
        if not (folder.parent / member.name).is_dir():
            raise WeightsError(f"{path}: member {member.name!r} not found in {folder.parent}")
        if (folder.parent / member.name).resolve() == folder.resolve():
            raise WeightsError(f"{path}: the ensemble lists itself as a member")
    if len(set(members)) != len(members):
        raise WeightsError(f"{path}: a member is listed twice at the same input scale")
    return members


def _member(entry: object, path: Path) -> EnsembleMember:
    """One entry of `path`'s member list: a name, or a name with an input scale."""
    from istd.models.hub import is_plain_name  # hub loads ensembles: imported on use

    if isinstance(entry, dict):
        if set(entry) != {"name", "input_scale"} or not _is_scale(entry["input_scale"]):
            raise WeightsError(
                f"{path}: member {entry!r} must be a name or an object with 'name' and "
                "'input_scale' (a number in [0.25, 4])"
            )
        name, scale = entry["name"], float(entry["input_scale"])
    else:
        name, scale = entry, None
    if not (isinstance(name, str) and is_plain_name(name)):
        raise WeightsError(
            f"{path}: member {name!r} is not a plain folder name (members lie beside "
            f"{path.parent.name}, named without a path)"
        )
    return EnsembleMember(name, scale)


def load_ensemble(folder: Path, load_member: Callable[[Path], nn.Module]) -> Ensemble:
    """Build the ensemble `folder/ensemble.json` describes, loading each member's folder with
    `load_member` (the loader of plain weights folders).

    Raises:
        WeightsError: a bad `ensemble.json` (see `ensemble_members`), a member that is itself an
            ensemble or does not load.
    """
    members = ensemble_members(folder)
    networks = []
    for member in members:
        member_folder = folder.parent / member.name
        if (member_folder / ENSEMBLE_FILE).is_file():
            raise WeightsError(
                f"{folder / ENSEMBLE_FILE}: member {member.name!r} is itself an ensemble; list "
                "its members instead"
            )
        network = load_member(member_folder)
        if member.input_scale is not None:
            network.set_input_scale(member.input_scale)  # every weights folder holds a MiMISTD
        networks.append(network)
    labels = [str(m) for m in members]
    model = Ensemble(networks, labels, model_name=folder.name)
    extra: dict[str, Any] = {"members": labels}
    model.pretrained_extra = extra
    return model.eval()
