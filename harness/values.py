"""Plain values out of pandas/numpy cells: a number or None (never NaN), a DB-ready scalar."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def number(value: Any) -> Optional[float]:
    """A float, or None for missing/NaN/non-numeric cells (booleans are not numbers here)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def formatted(value: Any, spec: str, suffix: str = "") -> str:
    """A table cell: the number in `spec` plus `suffix`, or '-' when it is missing/NaN."""
    figure = number(value)
    return "-" if figure is None else format(figure, spec) + suffix


def plain(value: Any) -> Any:
    """A value DB-API drivers and JSON accept: numpy scalars unwrapped, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
