"""Strict-JSON values: what `json.dumps(..., allow_nan=False)` accepts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN / inf become null (strict JSON has no NaN), numpy scalars plain,
    tuples lists, dict keys strings.

    Metrics are NaN when undefined (e.g. Pd of a split without targets, or the target precision
    of a model that predicts nothing); bare NaN is not JSON and other readers reject it.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
