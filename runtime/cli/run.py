"""recon-run: reconstruct image files with an exported artifact.

Each input file is read, checked and written on its own (`FileOutcome` records what happened to it): a bad
file is reported by name and reason and the others are still written; the exit status is non-zero when any
failed, and `--json` prints every file's status on stdout whatever happened. Errors that concern the whole
command (the artifact, the output folder) stop it before any file is read.

Heavy modules load inside the command so `--help` and a one-image run start fast.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recon.runtime.backends.base import BackendError
from recon.runtime.cli.base import PRECISIONS, Command, one_line

if TYPE_CHECKING:
    import numpy as np

    from recon.runtime.io.imageio import ImageFile
    from recon.runtime.reconstructor import Reconstructor


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"--dicom-window takes LOW,HIGH (two numbers), got {text!r}") from None
    return low, high


def collect_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Files as given, folders' image files (not recursive), in order."""
    from recon.runtime.io.imageio import SUFFIXES, detect_format

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p
                for p in item.iterdir()
                if p.is_file() and not p.name.startswith(".") and detect_format(p) is not None
            )
            if not found:
                raise ValueError(f"{item}: no image files in this folder ({', '.join(sorted(SUFFIXES))})")
            files.extend(found)
        else:  # a file of unknown format is that file's failure (reported with the others)
            files.append(item)
    return files


def plan_outputs(files: list[Path], out: Path, force: bool) -> list[Path]:
    """One output per input (same name) in `out`; never an input, never an existing file without force."""
    inputs = {f.resolve() for f in files}
    outputs: list[Path] = []
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise ValueError(f"{seen[f.name]} and {f} would both write {out / f.name}; run them separately")
        seen[f.name] = f
        target = out / f.name
        if target.resolve() in inputs:
            raise ValueError(f"--out {out} would overwrite the input {f}; choose another output folder")
        outputs.append(target)
    existing = [p for p in outputs if p.exists()]
    for target in existing:  # a hard link to an input resolves to another path but is the same file
        same = next((f for f in files if os.path.samefile(f, target)), None)
        if same is not None:
            raise ValueError(f"{target} is the input {same} (a link); choose another output folder")
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(f"{existing[0]}{more} already exist(s); pass --force to overwrite")
    return outputs


RUN_EPILOG = """\b
Examples:
  recon-run artifacts/resunet-deblur blurred/ --out restored/
  recon-run artifacts/resunet-deblur scan.dcm --out out/ --backend cpu --threads 2
  recon-run artifacts/resunet-deblur dicom_folder/ --out derived/ --json   (one derived series per series)
  recon-run artifacts/resunet-ct sinograms/*.npy --out images/ --batch 16 --json
"""


# Errors that concern one file: reported on that file's outcome, the others carry on. (ArtifactError is a
# ValueError, BackendError at run time is onnxruntime failing on that batch, e.g. out of memory: an artifact
# that fails on every batch fails every file, each with the reason.)
FILE_ERRORS = (ValueError, OSError, MemoryError, BackendError)


@dataclass
class FileOutcome:
    """What happened to one input file. Other steps add their own fields (e.g. consistency scores)."""

    path: Path
    target: Path
    status: str = "pending"  # "written" | "failed" | "pending" (the run stopped before it)
    reason: str = ""
    images: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # extra per-file facts, merged into the JSON
    image: ImageFile | None = field(default=None, repr=False)  # between the read and the write steps

    def fail(self, error: BaseException) -> None:
        text = one_line(error)
        prefix = f"{self.path}: "  # readers' messages start with the file; say it once
        self.status, self.reason = "failed", text[len(prefix) :] if text.startswith(prefix) else text
        self.image = None

    def to_json(self) -> dict[str, Any]:
        data = {"path": str(self.path), "out": str(self.target), "status": self.status, "images": self.images}
        return {**data, **({"reason": self.reason} if self.reason else {}), **self.details}


@dataclass
class RunReport:
    """The whole run: one outcome per input file, timings, and the error that stopped it, if any."""

    artifact: Path
    out: Path
    files: list[FileOutcome] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    backend: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    series: list[dict[str, Any]] = field(default_factory=list)  # per DICOM series: counts and folder
    series_flagged: int = 0  # DICOM series slices the consistency check flagged

    @property
    def flagged(self) -> list[FileOutcome]:
        return [f for f in self.files if f.details.get("flagged")]

    @property
    def failed(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def images(self) -> int:
        return sum(f.images for f in self.files if f.status == "written")

    def to_json(self, wall: float) -> dict[str, Any]:
        import numpy as np

        ms = np.asarray(self.run_seconds or [0.0]) * 1e3
        return {
            "artifact": str(self.artifact),
            **self.backend,
            "ok": not self.error and all(f.status == "written" for f in self.files),
            **({"error": self.error} if self.error else {}),
            "files": len(self.files),
            "failed": len(self.failed),
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
            "out": str(self.out),
            "flagged": len(self.flagged) if self.backend.get("consistency") else None,
            "outcomes": [f.to_json() for f in self.files],
            **({"series": self.series} if self.series else {}),
        }


# -- per-file steps ----------------------------------------------------------------------------------------
def read_checked(item: FileOutcome, rec: Reconstructor, window: tuple[float, float] | None) -> np.ndarray:
    """Read one file and check it against the artifact by the rule `Reconstructor.run` applies."""
    from recon.runtime.io.imageio import read_image

    item.image = read_image(item.path, dicom_window=window)
    batch, _ = rec.prepare(item.image.data)
    return batch


def note_scores(item: FileOutcome, scores: list[Any] | None) -> None:
    """The consistency check's scores for one file's images: into its JSON record, and a flagged file's
    note to its image so that a DICOM output carries it (runtime/consistency.py)."""
    from recon.runtime.consistency import flag_note

    if scores is None:
        return
    note = flag_note(scores)
    item.details["consistency"] = [score.to_json() for score in scores]
    item.details["flagged"] = note is not None
    if note is not None and item.image is not None:
        item.image.meta["consistency_note"] = note


def write_result(item: FileOutcome, result: np.ndarray, scores: list[Any] | None = None) -> None:
    """Write one file's images (B, 1, H, W) in its format; the outcome is then "written"."""
    from recon.runtime.io.imageio import write_image

    note_scores(item, scores)
    image, item.image = item.image, None
    assert image is not None
    write_image(item.target, result[0, 0] if image.data.ndim == 2 else result[:, 0], image)
    item.status, item.images = "written", len(result)


@dataclass
class Batcher:
    """Groups checked files into runs of about `per_run` images of one size; runs and writes each group."""

    rec: Reconstructor
    report: RunReport
    per_run: int
    group: list[tuple[FileOutcome, np.ndarray]] = field(default_factory=list)

    def add(self, item: FileOutcome, batch: np.ndarray) -> None:
        if self.group and self.group[0][1].shape[2:] != batch.shape[2:]:
            self.flush()  # a batch holds one size
        self.group.append((item, batch))
        if sum(len(b) for _, b in self.group) >= self.per_run:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        group, self.group = self.group, []
        if len(group) > 1:
            try:
                results, scores = self.run(np.concatenate([b for _, b in group]))
            except FILE_ERRORS:  # run each file alone below, to tell which one failed
                pass
            else:
                first = 0
                for item, batch in group:
                    part = slice(first, first + len(batch))
                    self.attempt(item, write_result, results[part], scores and scores[part])
                    first += len(batch)
                return
        for item, batch in group:
            self.attempt(item, lambda item, batch: write_result(item, *self.run(batch)), batch)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, list[Any] | None]:
        result, scores = self.rec.run(batch, return_scores=True)
        self.report.run_seconds.append(self.rec.last_timings["total"])
        return result, scores

    @staticmethod
    def attempt(item: FileOutcome, step: Any, *args: Any) -> None:
        try:
            step(item, *args)
        except FILE_ERRORS as error:
            item.fail(error)


def reconstruct_files(
    rec: Reconstructor, report: RunReport, per_run: int, window: Any, derivation: Any = None
) -> None:
    """Every file read, checked, run and written on its own; failures land on the file's outcome."""
    from tqdm import tqdm

    batcher = Batcher(rec, report, per_run)
    for item in tqdm(report.files, unit="file", desc="recon-run", disable=None, leave=False):
        try:
            batch = read_checked(item, rec, window)
        except FILE_ERRORS as error:
            item.fail(error)
            continue
        if item.image is not None and derivation is not None:
            item.image.meta["derivation"] = derivation  # DICOM outputs: this run's new series
        batcher.add(item, batch)
    batcher.flush()


def reconstruct_series(
    rec: Reconstructor, report: RunReport, job: Any, per_run: int, window: Any, derivation: Any
) -> None:
    """The DICOM series (dicom_series.SeriesJob), slice by slice into the report; a bar of slices done."""
    from tqdm import tqdm

    def run(batch: np.ndarray) -> np.ndarray:
        from recon.runtime.consistency import flag_note

        result, scores = rec.run(batch, return_scores=True)
        report.run_seconds.append(rec.last_timings["total"])
        # one note per slice, for the series writer to put into flagged slices (dicom_series)
        run.notes = None if scores is None else [flag_note([score]) for score in scores]  # type: ignore
        if scores is not None:
            report.series_flagged += sum(score.flagged for score in scores)
        return result

    with tqdm(total=job.n_slices, unit="slice", desc="series", disable=None, leave=False) as bar:
        outcomes = job.run(
            run,
            batch=per_run,
            window=window,
            derivation=derivation,
            check=lambda image: rec.prepare(image.data),  # the one input rule, as for other files
            progress=bar.update,
        )
    for outcome in outcomes:
        item = FileOutcome(outcome.path, outcome.output or job.plan.get(outcome.path, report.out))
        item.details["series"] = outcome.series
        if outcome.status == "ok":
            item.status, item.images = "written", 1
        else:
            item.fail(outcome.error or "failed")
        report.files.append(item)
    report.series = job.summary()


@click.command("run", cls=Command, epilog=RUN_EPILOG)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created); outputs keep each input's name and format.",
)
@click.option(
    "--backend",
    "-b",
    default="auto",
    show_default=True,
    help="auto, cpu (onnxruntime-cpu), openvino (ov), cuda (onnxruntime-cuda), onnxruntime-tensorrt, "
    "tensorrt.",
)
@click.option("--batch", type=int, default=None, help="Images per run (default: the artifact's opt batch).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: FP32 on the CPU, plan or FP16 on a GPU.",
)
@click.option(
    "--threads", type=int, default=None, help="onnxruntime intra-op threads (default: one per core)."
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs (inputs are never overwritten).")
@click.option(
    "--tile",
    type=click.IntRange(1),
    default=None,
    help="Tile side in px: larger images run as blended tiles (a memory cap); default: the artifact's.",
)
@click.option(
    "--overlap", type=click.IntRange(0), default=None, help="Tile overlap in px; default: the artifact's."
)
@click.option(
    "--dicom-window",
    default=None,
    metavar="LOW,HIGH",
    help="Physical values mapped to [0, 1] for DICOM inputs (default: the header's WindowCenter/Width, "
    "else the stored bits' range).",
)
@click.option(
    "--no-consistency",
    "no_consistency",
    is_flag=True,
    help="Skip the artifact's consistency check (no scores, no warnings, no cost).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def run_command(
    artifact: Path,
    inputs: tuple[str, ...],
    out: Path,
    backend: str,
    batch: int | None,
    precision: str,
    threads: int | None,
    force: bool,
    tile: int | None,
    overlap: int | None,
    dicom_window: str | None,
    no_consistency: bool,
    as_json: bool,
) -> int:
    """Reconstruct image files (PNG, TIFF, NPY, DICOM) with an exported artifact.

    INPUTS are files or folders. CT artifacts take sinograms (NPY/TIFF, n_angles × n_detectors). Image
    artifacts take any size: whole where the graph can, as blended tiles above its maximum side.
    A file that cannot be read or does not fit the artifact is reported and skipped; the others are
    written, and the exit status is 1 when any file failed. DICOM files inside a folder (any name) are
    grouped by series and ordered; each source series becomes a new derived series in
    OUT/<series>/0001.dcm, … (recon.runtime.io.dicom_series). Every output is scored by the artifact's
    consistency check: a flagged file gets one warning line on stderr, its scores in --json, and (DICOM)
    a note in ImageComments / DerivationDescription.
    """
    from recon.runtime.io.dicom import run_derivation
    from recon.runtime.io.dicom_series import SeriesJob, series_inputs

    started = time.perf_counter()
    report = RunReport(artifact, out)
    created = False  # whether this run made --out (removed again when nothing was written into it)
    try:
        window = _window(dicom_window)
        if batch is not None and batch < 1:
            raise click.BadParameter(f"--batch must be >= 1, got {batch}")
        files = collect_inputs(inputs)
        in_series = series_inputs(inputs)  # DICOM files in folders: by series, not by file name
        files = [f for f in files if f not in set(in_series)]
        series = SeriesJob(in_series, out, force) if in_series else None
        targets = plan_outputs(files, out, force)
        report.files = [FileOutcome(f, t) for f, t in zip(files, targets, strict=True)]
        consistency = not no_consistency
        with open_reconstructor(
            artifact, report, backend, precision, threads, consistency, tile, overlap
        ) as rec:
            created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            per_run = batch or rec.manifest.batch.get("opt", 1)
            derivation = run_derivation(artifact, rec.manifest, rec.backend_name, rec.precision, window)
            reconstruct_files(rec, report, per_run, window, derivation)
            if series is not None:
                reconstruct_series(rec, report, series, per_run, window, derivation)
    except BaseException as error:
        report.error = "interrupted" if isinstance(error, KeyboardInterrupt) else one_line(error)
        raise
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing written: leave no empty --out that looks like a result
        print_report(report, time.perf_counter() - started, as_json)
    return 0 if all(f.status == "written" for f in report.files) else 1


@contextmanager
def open_reconstructor(
    artifact: Path,
    report: RunReport,
    backend: str,
    precision: str,
    threads: int | None,
    consistency: bool = True,
    tile: int | None = None,
    overlap: int | None = None,
) -> Iterator[Reconstructor]:
    from recon.runtime.reconstructor import Reconstructor

    with Reconstructor.from_artifact(
        artifact,
        backend=backend,
        precision=precision,
        threads=threads,
        consistency=consistency,
        tile=tile,
        overlap=overlap,
    ) as rec:
        report.backend = {
            "backend": rec.backend_name,
            "reason": rec.backend_reason,
            "precision": rec.precision,
            "consistency": None if rec.consistency is None else rec.consistency.describe(),
        }
        yield rec


def print_report(report: RunReport, wall: float, as_json: bool) -> None:
    """One stderr line per failed file; then JSON on stdout (whatever happened) or a summary."""
    for item in report.failed:
        click.echo(f"error: {item.path}: {item.reason}", err=True)
    summary = report.to_json(wall)
    for item in report.flagged:  # one line per flagged file, on stderr whatever the output mode
        scores = item.details.get("consistency") or []
        reasons = "; ".join(r for score in scores if score["flagged"] for r in score["reasons"][:3])
        click.echo(
            f"warning: {item.path}: consistency check FLAGGED the output ({reasons}); do not trust it "
            "without review",
            err=True,
        )
    if report.series_flagged:
        click.echo(
            f"warning: {report.series_flagged} DICOM series slice(s) FLAGGED by the consistency check "
            "(noted in their ImageComments); do not trust them without review",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if report.error:  # the command's own one-line error follows
        return
    failed = f"; {len(report.failed)} file(s) failed" if report.failed else ""
    click.echo(
        f"{report.images} image(s) from {len(report.files) - len(report.failed)} file(s) → {report.out}/"
        f"{failed}  [{summary.get('backend')}, {summary.get('precision')}; {summary.get('reason')}]"
    )
    ms = summary["run_ms"]
    if ms is None or summary["per_image_ms"] is None:
        return
    click.echo(
        f"latency per run: p50 {ms['p50']:.2f} ms, p90 {ms['p90']:.2f} ms, max {ms['max']:.2f} ms; "
        f"{summary['per_image_ms']:.2f} ms per image; wall {wall:.2f} s"
    )
