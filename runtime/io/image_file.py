"""What every format reader returns and raises: one image file's pixels and header, and the one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ImageIOError(ValueError):
    """A file cannot be read or written as an image; the message names the file and why."""


@dataclass
class ImageFile:
    path: Path
    format: str  # "png" | "tiff" | "npy" | "dicom"
    data: np.ndarray  # (H, W) or (N, H, W)
    meta: dict[str, Any] = field(default_factory=dict)
    # What mapped the file's values to `data` (e.g. "DICOM window -160..239"); None when `data` holds the
    # stored values themselves. A CT artifact takes only the measurement as stored (inputs.check_measurement).
    scaled_by: str | None = None
