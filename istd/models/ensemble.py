"""Ensembles: the mean of several networks' probabilities, loaded from a folder that names them.

Networks trained differently (another head, another input scale) make different mistakes:
their false alarms on clutter rarely coincide, while a real target lights up in each. Averaging
their probabilities keeps the targets and thins the false alarms, for the sum of their
compute.

An ensemble folder holds `ensemble.json` instead of weights::

    {"members": ["mim-istd-nuaa-sirst-x1.5", "mim-istd-nuaa-sirst-h2"]}

Each member is a weights folder beside it, named without a path (so nothing outside the
weights folder's parent is read), loaded as `from_pretrained` loads any folder; each keeps its
own input scale and normalisation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from istd.errors import WeightsError
from istd.models.tta import logit_of_mean

__all__ = ["ENSEMBLE_FILE", "Ensemble", "EnsembleConfig", "ensemble_members", "load_ensemble"]

ENSEMBLE_FILE = "ensemble.json"


@dataclass(frozen=True)
class EnsembleConfig:
    """What code reading a network's `config` needs: its members' names and input channels.

    `input_scale` is None: each member runs at its own (`MiMConfig.input_scale`).
    """

    members: tuple[str, ...]
    in_chans: int = 1
    input_scale: None = None


class Ensemble(nn.Module):
    """Logits of the mean probability of `members` (each maps (B, C, H, W) to (B, 1, H, W)).

    Args:
        members: two or more networks taking the same input channels.
        names: one name per member (their weights folders), kept in `config.members`.
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


def ensemble_members(folder: Path) -> list[str]:
    """The member names that `folder/ensemble.json` lists, checked.

    Raises:
        WeightsError: unreadable JSON, no list of two or more distinct plain names (no path
            separators, not hidden), or a member that is not a folder beside `folder`.
    """
    path = folder / ENSEMBLE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} is not readable JSON: {exc}") from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise WeightsError(f"{path}: 'members' must list two or more weights folder names")
    from istd.models.hub import is_plain_name  # hub loads ensembles: imported on use

    for name in members:
        if not (isinstance(name, str) and is_plain_name(name)):
            raise WeightsError(
                f"{path}: member {name!r} is not a plain folder name (members lie beside "
                f"{folder.name}, named without a path)"
            )
        if not (folder.parent / name).is_dir():
            raise WeightsError(f"{path}: member {name!r} not found in {folder.parent}")
        if (folder.parent / name).resolve() == folder.resolve():
            raise WeightsError(f"{path}: the ensemble lists itself as a member")
    if len(set(members)) != len(members):
        raise WeightsError(f"{path}: a member is listed twice")
    return members


def load_ensemble(folder: Path, load_member: Callable[[Path], nn.Module]) -> Ensemble:
    """Build the ensemble `folder/ensemble.json` describes, loading each member's folder with
    `load_member` (the loader of plain weights folders).

    Raises:
        WeightsError: a bad `ensemble.json` (see `ensemble_members`), a member that is itself an
            ensemble or does not load.
    """
    names = ensemble_members(folder)
    members = []
    for name in names:
        member_folder = folder.parent / name
        if (member_folder / ENSEMBLE_FILE).is_file():
            raise WeightsError(
                f"{folder / ENSEMBLE_FILE}: member {name!r} is itself an ensemble; list its "
                "members instead"
            )
        members.append(load_member(member_folder))
    model = Ensemble(members, names, model_name=folder.name)
    extra: dict[str, Any] = {"members": names}
    model.pretrained_extra = extra
    return model.eval()
