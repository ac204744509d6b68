"""The manifest's "spatial" entry: which image sizes an artifact's graph takes, and how to tile the rest.

    "spatial": {
      "whole_image": true,      # the graph takes any H × W with min <= H, W <= max (and multiples of
                                # multiple_of) in one piece; false: only tiles of tile × tile (a ViT's fixed
                                # patch grid, any fixed-size graph)
      "min": 64, "opt": 512, "max": 2048,   # sides the graph takes whole (also the TensorRT profile)
      "multiple_of": 1,         # 1: any size (a ResUNet pads to 2^G inside its graph)
      "tile": 2048,             # default sliding-window tile side (images above max, or when asked)
      "overlap": 320,           # default tile overlap in pixels
      "blend": "gaussian",      # tile weights: "gaussian" (MONAI's importance map) or "cosine"
      "receptive_field": 309    # px along the model's longest path (null: global, attention)
    }

Artifacts without the entry (CT, whose input is a sinogram, and artifacts exported before it existed) keep
the plain contract: the graph's own input shape, fixed sizes exactly, symbolic ones up to the runtime's caps
(`recon.runtime.limits`), no tiling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from recon.runtime import limits

BLENDS = ("gaussian", "cosine")


class SpatialError(ValueError):
    """A spatial entry that the runtime cannot use (the manifest checker turns it into ArtifactError)."""


@dataclass(frozen=True)
class Spatial:
    whole_image: bool
    min: int
    opt: int
    max: int
    multiple_of: int
    tile: int
    overlap: int
    blend: str = "gaussian"
    receptive_field: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def takes_whole(self, height: int, width: int) -> bool:
        """Whether the graph takes an H × W image in one piece (after padding up to `min`)."""
        if not self.whole_image:
            return (height, width) == (self.tile, self.tile)
        return (
            max(height, width) <= self.max
            and height % self.multiple_of == 0
            and width % self.multiple_of == 0
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_spatial(data: Any) -> Spatial:
    """A validated Spatial from the manifest's JSON; SpatialError names the first bad field."""
    if not isinstance(data, dict):
        raise SpatialError(f"spatial must be a JSON object, got {data!r}")
    known = set(Spatial.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpatialError(f"spatial has unknown keys {unknown}")
    required = ("whole_image", "min", "opt", "max", "multiple_of", "tile", "overlap")
    missing = [key for key in required if key not in data]
    if missing:
        raise SpatialError(f"spatial is missing {missing}")
    if not isinstance(data["whole_image"], bool):
        raise SpatialError(f"spatial whole_image must be true or false, got {data['whole_image']!r}")
    for key in ("min", "opt", "max", "multiple_of", "tile"):
        if not _positive_int(data[key]) or data[key] > limits.MAX_IMAGE_SIDE:
            raise SpatialError(
                f"spatial {key} must be an integer in 1..{limits.MAX_IMAGE_SIDE}, got {data[key]!r}"
            )
    if not data["min"] <= data["opt"] <= data["max"]:
        raise SpatialError(
            f"spatial needs min <= opt <= max, got {data['min']}, {data['opt']}, {data['max']}"
        )
    if data["min"] % data["multiple_of"] or data["max"] % data["multiple_of"]:
        raise SpatialError(f"spatial min and max must be multiples of multiple_of ({data['multiple_of']})")
    if data["whole_image"] and not data["min"] <= data["tile"] <= data["max"]:
        raise SpatialError(
            f"spatial tile {data['tile']} must lie within min..max ({data['min']}..{data['max']})"
        )
    if data["tile"] % data["multiple_of"]:
        raise SpatialError(f"spatial tile {data['tile']} must be a multiple of {data['multiple_of']}")
    overlap = data["overlap"]
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < data["tile"]:
        raise SpatialError(f"spatial overlap must be an integer in 0..tile-1, got {overlap!r}")
    if data.get("blend", "gaussian") not in BLENDS:
        raise SpatialError(f"spatial blend must be one of {list(BLENDS)}, got {data.get('blend')!r}")
    field = data.get("receptive_field")
    if field is not None and not _positive_int(field):
        raise SpatialError(f"spatial receptive_field must be a positive integer or null, got {field!r}")
    return Spatial(**data)


def default_overlap(tile: int, receptive_field: int | None) -> int:
    """Tile overlap: the receptive field rounded up to 16 px (where tiles agree with the whole image),
    at most half a tile; a quarter tile for global fields (MONAI's default overlap of 0.25)."""
    if receptive_field is None:
        return tile // 4
    return min(-(-receptive_field // 16) * 16, tile // 2)
