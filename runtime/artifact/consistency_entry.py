"""The manifest's optional "consistency" entry (the trust check, runtime/consistency.py), parsed once.

    "consistency": {"file": "consistency.onnx", "inputs": ["image", "measurement"], "output": "scores",
                    "statistics": ["residual", ...],            # the columns of "scores"
                    "bounds": {"residual": {"check": "upper", "low": null, "high": 0.02}, ...},
                    "threshold": 0.02, "rule": "...",
                    "percentiles": {...}, "margin": ..., "operator": "...", "calibration": {...}}

The keys after "rule" are the calibration's record: kept as they were read (`details`), read by no check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recon.runtime.artifact.errors import ArtifactError

CHECK_SIDES = ("upper", "lower", "both")
NAMED_KEYS = ("file", "inputs", "output", "statistics", "bounds", "threshold", "rule")


@dataclass(frozen=True)
class Bound:
    """The interval one statistic must stay in: `check` says which sides (upper, lower, both) count."""

    check: str
    low: float | None = None
    high: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class ConsistencyEntry:
    file: str
    image_input: str
    measurement_input: str
    output: str
    statistics: tuple[str, ...]
    bounds: Mapping[str, Bound]
    threshold: float | None = None
    rule: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # percentiles, margin, operator, calibration

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file": self.file,
            "inputs": [self.image_input, self.measurement_input],
            "output": self.output,
            "statistics": list(self.statistics),
            "bounds": {name: bound.to_json() for name, bound in self.bounds.items()},
        }
        if self.threshold is not None:
            data["threshold"] = self.threshold
        if self.rule is not None:
            data["rule"] = self.rule
        return {**data, **self.details}

    @classmethod
    def from_json(
        cls, entry: Any, files: Mapping[str, Any], source: str = "manifest.json"
    ) -> ConsistencyEntry:
        check_consistency_entry(entry, files, source)
        threshold = entry.get("threshold")
        rule = entry.get("rule")
        return cls(
            file=entry["file"],
            image_input=entry["inputs"][0],
            measurement_input=entry["inputs"][1],
            output=entry["output"],
            statistics=tuple(entry["statistics"]),
            bounds={
                name: Bound(bound["check"], bound.get("low"), bound.get("high"))
                for name, bound in entry["bounds"].items()
            },
            threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
            rule=rule if isinstance(rule, str) else None,
            details={key: value for key, value in entry.items() if key not in NAMED_KEYS},
        )


def check_consistency_entry(entry: Any, files: Mapping[str, Any], source: str = "manifest.json") -> None:
    """The manifest's optional "consistency" entry, as ArtifactError rather than a KeyError later."""

    def fail(what: str) -> None:
        raise ArtifactError(f"{source}: consistency entry {what}; re-export the artifact")

    if not isinstance(entry, dict):
        fail(f"must be a JSON object, got {entry!r}")
    name = entry.get("file")
    if not isinstance(name, str) or name not in files:
        fail(f"names file {name!r}, which the manifest's files do not list")
    if getattr(files[name], "kind", None) != "consistency":
        fail(f"file {name!r} is listed with kind {getattr(files[name], 'kind', None)!r}, not 'consistency'")
    stats = entry.get("statistics")
    if not (isinstance(stats, list) and stats and all(isinstance(s, str) for s in stats)):
        fail(f"needs a non-empty list of statistic names, got {stats!r}")
    if "residual" not in stats:
        fail("lists no 'residual' statistic")
    if not (isinstance(entry.get("inputs"), list) and len(entry["inputs"]) == 2):
        fail(f"needs two input names (image, measurement), got {entry.get('inputs')!r}")
    if not all(isinstance(n, str) for n in entry["inputs"]) or not isinstance(entry.get("output"), str):
        fail("input and output names must be strings")
    bounds = entry.get("bounds")
    if not isinstance(bounds, dict):
        fail(f"needs 'bounds' (statistic -> interval), got {bounds!r}")
    for stat, bound in bounds.items():
        if stat not in stats:
            fail(f"bounds statistic {stat!r} is not among its statistics {stats}")
        if not isinstance(bound, dict) or bound.get("check") not in CHECK_SIDES:
            fail(f"bound of {stat!r} needs 'check' in {CHECK_SIDES}, got {bound!r}")
        for side, key in (("lower", "low"), ("upper", "high")):
            value = bound.get(key)
            needed = bound["check"] in (side, "both")
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if needed and not finite:
                fail(f"bound of {stat!r} checks the {side} side but its {key!r} is {value!r}")
        if bound["check"] == "both" and not bound["low"] <= bound["high"]:
            fail(f"bound of {stat!r} has low {bound['low']} > high {bound['high']}")
    if "residual" not in bounds:
        fail("has no bound for 'residual'")
