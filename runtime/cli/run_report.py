"""What one recon-run did: an outcome per input file, the run's timings, and how they are reported
(one stderr line per skipped, failed or flagged file; JSON on stdout with --json, whatever happened).

Every name and reason from outside goes through `untrusted.shown`: a file name cannot forge a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recon.runtime.cli.base import one_line
from recon.runtime.io.untrusted import shown

if TYPE_CHECKING:
    from recon.runtime.io.imageio import ImageFile


@dataclass
class FileOutcome:
    """What happened to one input file. Other steps add their own fields (e.g. consistency scores)."""

    path: Path
    target: Path | None  # None: nothing is written for it (a skipped folder entry)
    status: str = "pending"  # "written" | "failed" | "skipped" | "pending" (the run stopped before it)
    reason: str = ""
    images: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # extra per-file facts, merged into the JSON
    image: ImageFile | None = field(default=None, repr=False)  # between the read and the write steps
    replace: bool = False  # --force: an existing output may be replaced (never without it, however late)

    def fail(self, error: BaseException | str) -> None:
        text = str(error).strip()
        prefix = f"{self.path}: "  # readers' messages start with the file (as it is); say it once
        self.status = "failed"
        self.reason = one_line(text[len(prefix) :] if text.startswith(prefix) else text)  # shown when printed
        self.image = None

    def to_json(self) -> dict[str, Any]:
        out = None if self.target is None else shown(self.target)
        data = {"path": shown(self.path), "out": out, "status": self.status, "images": self.images}
        return {**data, **({"reason": shown(self.reason)} if self.reason else {}), **self.details}


@dataclass
class RunReport:
    """The whole run: one outcome per input file, timings, and the error that stopped it, if any."""

    artifact: Path
    out: Path
    files: list[FileOutcome] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    # seconds per stage over the run: read, prepare (the input check), infer, check (consistency), write
    stage_seconds: dict[str, float] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    series: list[dict[str, Any]] = field(default_factory=list)  # per DICOM series: counts and folder

    def add_run(self, timings: dict[str, float]) -> None:
        """One `Reconstructor.run`'s timings: its total, and its inference and consistency-check stages."""
        check = timings.get("consistency", 0.0)
        self.run_seconds.append(timings["total"])
        self.stage_seconds["infer"] = self.stage_seconds.get("infer", 0.0) + timings["total"] - check
        self.stage_seconds["check"] = self.stage_seconds.get("check", 0.0) + check

    @property
    def flagged(self) -> list[FileOutcome]:
        return [f for f in self.files if f.details.get("flagged")]

    @property
    def failed(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def skipped(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def images(self) -> int:
        return sum(f.images for f in self.files if f.status == "written")

    def to_json(self, wall: float) -> dict[str, Any]:
        import numpy as np

        ms = np.asarray(self.run_seconds or [0.0]) * 1e3
        return {
            "artifact": shown(self.artifact),
            **self.backend,
            "ok": not self.error and all(f.status == "written" for f in self.files),
            **({"error": shown(self.error)} if self.error else {}),
            "files": len(self.files),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "images": self.images,
            "runs": len(self.run_seconds),
            # no run, no latency (a "p50 0.00 ms" after a failure reads as a measurement)
            "run_ms": {
                "p50": float(np.percentile(ms, 50)),
                "p90": float(np.percentile(ms, 90)),
                "mean": float(ms.mean()),
                "max": float(ms.max()),
            }
            if self.run_seconds
            else None,
            "per_image_ms": float(ms.sum() / self.images) if self.run_seconds and self.images else None,
            "wall_s": wall,
            "stage_s": {
                stage: round(self.stage_seconds.get(stage, 0.0), 6)
                for stage in ("read", "prepare", "infer", "check", "write")
            },
            "out": shown(self.out),
            "flagged": len(self.flagged) if self.backend.get("consistency") else None,
            "outcomes": [f.to_json() for f in self.files],
            **({"series": self.series} if self.series else {}),
        }


def print_report(report: RunReport, wall: float, as_json: bool) -> None:
    """One stderr line per failed file; then JSON on stdout (whatever happened) or a summary."""
    for item in report.skipped:
        click.echo(f"skipped: {shown(item.path)}: {shown(item.reason)}", err=True)
    for item in report.failed:
        click.echo(f"error: {shown(item.path)}: {shown(item.reason)}", err=True)
    summary = report.to_json(wall)
    for item in report.flagged:  # one line per flagged file, on stderr whatever the output mode
        scores = item.details.get("consistency") or []
        reasons = "; ".join(r for score in scores if score["flagged"] for r in score["reasons"][:3])
        click.echo(
            f"warning: {shown(item.path)}: consistency check FLAGGED the output ({shown(reasons)}); do not "
            "trust it "
            "without review",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if report.error:  # the command's own one-line error follows
        return
    failed = f"; {len(report.failed)} file(s) failed" if report.failed else ""
    failed += f"; {len(report.skipped)} folder entr(ies) skipped" if report.skipped else ""
    written = sum(f.status == "written" for f in report.files)
    click.echo(
        f"{report.images} image(s) from {written} file(s) → {shown(report.out)}/"
        f"{failed}  [{summary.get('backend')}, {summary.get('precision')}; {summary.get('reason')}]"
    )
    ms = summary["run_ms"]
    if ms is None or summary["per_image_ms"] is None:
        return
    click.echo(
        f"latency per run: p50 {ms['p50']:.2f} ms, p90 {ms['p90']:.2f} ms, max {ms['max']:.2f} ms; "
        f"{summary['per_image_ms']:.2f} ms per image; wall {wall:.2f} s"
    )
