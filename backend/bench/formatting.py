"""Small helpers the bench reports share: a mean that skips missing values, table number format, and
a row's image (bytes in the row, or the file it points to). In a module of their own so that the
quality report and the coarse/fine comparison use one copy without importing each other."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np


def finite_mean(values) -> float:
    """Mean of the values that are there (None and NaN left out); NaN when none is."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def fmt(v, digits=3) -> str:
    """A number for a table: '-' for a missing one."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def row_image(row: dict, key: str):
    """The row's ``key`` image ("turntable", "views") as a PIL RGB image, from its bytes or from its
    ``<key>_file`` path; None when it has neither."""
    from PIL import Image

    data = row.get(key) if isinstance(row.get(key), bytes) else None
    if data is None and row.get(f"{key}_file") and Path(row[f"{key}_file"]).is_file():
        data = Path(row[f"{key}_file"]).read_bytes()
    return Image.open(io.BytesIO(data)).convert("RGB") if data else None
