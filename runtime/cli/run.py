"""recon-run: reconstruct image files with an exported artifact.

Each input file is read, checked and written on its own (`FileOutcome` records what happened to it): a bad
file is reported by name and reason and the others are still written; the exit status is non-zero when any
failed, and `--json` prints every file's status on stdout whatever happened. Errors that concern the whole
command (the artifact, the output folder) stop it before any file is read.

Heavy modules load inside the command so `--help` and a one-image run start fast.
"""

from __future__ import annotations

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
from recon.runtime.cli.run_report import FileOutcome, RunReport, print_report
from recon.runtime.cli.signals import Terminated, signals_interrupt
from recon.runtime.cli.verify import ArtifactPath, verify_before_run
from recon.runtime.io.overlap import ReadAhead, WriteBehind

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


def collect_inputs(inputs: tuple[str, ...], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Files as given, folders' image files (not recursive), in order.

    Every folder entry is accounted for: one that is not an image file recon reads (a sub-folder, a FIFO,
    a hidden file, no known suffix and no known signature, e.g. a DICOM slice with a damaged preamble) is
    appended to `skipped` with its reason, for the report and the exit status.
    """
    from recon.runtime.io.imageio import SUFFIXES, detect_format

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = []
            for entry in sorted(item.iterdir()):
                reason = _not_an_input(entry, detect_format)
                if reason is None:
                    found.append(entry)
                elif skipped is not None:
                    skipped.append((entry, reason))
            if not found:
                raise ValueError(f"{item}: no image files in this folder ({', '.join(sorted(SUFFIXES))})")
            files.extend(found)
        else:  # a file of unknown format is that file's failure (reported with the others)
            files.append(item)
    return files


def _not_an_input(entry: Path, detect_format: Any) -> str | None:
    """Why a folder entry is not read (None: it is an image file recon reads)."""
    if entry.name.startswith("."):
        return "a hidden file (its name starts with '.'); not read"
    if entry.is_dir():
        return "a folder; recon-run does not descend into sub-folders"
    if not entry.is_file():
        return "not a regular file (a FIFO, device, socket or broken link)"
    if detect_format(entry) is None:
        return "not an image file recon reads (no known suffix, and no PNG/TIFF/NPY/DICOM signature)"
    return None


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


# -- per-file steps ----------------------------------------------------------------------------------------
def read_checked(
    item: FileOutcome,
    rec: Reconstructor,
    window: tuple[float, float] | None,
    seconds: dict[str, float] | None = None,
) -> np.ndarray:
    """Read one file and check it against the artifact by the rule `Reconstructor.run` applies; the time of
    each step is added to `seconds` ("read", "prepare")."""
    from recon.runtime.inputs import check_measurement
    from recon.runtime.io.imageio import read_image

    seconds = {} if seconds is None else seconds
    mark = time.perf_counter()
    item.image = read_image(item.path, dicom_window=window)
    read_done = time.perf_counter()
    check_measurement(item.image, rec.manifest.task)
    batch, _ = rec.prepare(item.image.data)
    seconds["read"] = seconds.get("read", 0.0) + read_done - mark
    seconds["prepare"] = seconds.get("prepare", 0.0) + time.perf_counter() - read_done
    return batch


def check_file(rec: Reconstructor, image: ImageFile) -> None:
    """The input rule for a read file: its values are what the artifact takes (inputs.check_measurement,
    `Reconstructor.prepare`), or ValueError."""
    from recon.runtime.inputs import check_measurement

    check_measurement(image, rec.manifest.task)
    rec.prepare(image.data)


def note_scores(item: FileOutcome, scores: list[Any] | None) -> None:
    """The consistency check's scores for one file's images: into its JSON record, and a flagged file's
    note to its image so that a DICOM output carries it (runtime/consistency.py)."""
    from recon.runtime.io.dicom_derived import flag_note

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
    assert image is not None and item.target is not None
    write_image(item.target, result[0, 0] if image.data.ndim == 2 else result[:, 0], image, item.replace)
    item.status, item.images = "written", len(result)


@dataclass
class Batcher:
    """Groups checked files into runs of about `per_run` images of one size; runs each group and hands its
    files to `writer` (write-behind: written while the next group runs)."""

    rec: Reconstructor
    report: RunReport
    per_run: int
    writer: WriteBehind
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
                    part_scores = scores and scores[part]
                    self.writer.submit(self.attempt, item, write_result, results[part], part_scores)
                    first += len(batch)
                return
        for item, batch in group:
            try:
                results, scores = self.run(batch)
            except FILE_ERRORS as error:
                item.fail(error)
                continue
            self.writer.submit(self.attempt, item, write_result, results, scores)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, list[Any] | None]:
        result, scores = self.rec.run(batch, return_scores=True)
        self.report.add_run(self.rec.last_timings)
        return result, scores

    @staticmethod
    def attempt(item: FileOutcome, step: Any, *args: Any) -> None:
        try:
            step(item, *args)
        except FILE_ERRORS as error:
            item.fail(error)


def reconstruct_files(
    rec: Reconstructor,
    report: RunReport,
    per_run: int,
    window: Any,
    derivation: Any = None,
    pipelined: bool = True,
) -> None:
    """Every file read, checked, run and written on its own; failures land on the file's outcome.

    Pipelined, the next files are read (and checked) on a worker thread while the current group runs,
    and finished files are written on another while the next group runs (runtime/io/overlap.py); the
    files, their order, names and outcomes are those of the serial run.
    """
    from tqdm import tqdm

    def read(item: FileOutcome) -> np.ndarray:
        batch = read_checked(item, rec, window, report.stage_seconds)
        if item.image is not None and derivation is not None:
            item.image.meta["derivation"] = derivation  # DICOM outputs: this run's new series
        return batch

    pending = [item for item in report.files if item.status == "pending"]  # not the skipped entries
    # a group of files ahead (bounded: at most `per_run` + 1 decoded files wait) and two groups behind
    with (
        ReadAhead(pending, read, depth=per_run + 1, overlap=pipelined) as reader,
        WriteBehind(depth=2 * per_run, overlap=pipelined) as writer,
    ):
        batcher = Batcher(rec, report, per_run, writer)
        bar = tqdm(reader, total=len(pending), unit="file", desc="recon-run", disable=None, leave=False)
        for item, batch, error in bar:
            if error is not None:
                if not isinstance(error, FILE_ERRORS):
                    raise error
                item.fail(error)
                continue
            batcher.add(item, batch)
        batcher.flush()
    report.stage_seconds["write"] = report.stage_seconds.get("write", 0.0) + writer.seconds


def reconstruct_series(
    rec: Reconstructor, report: RunReport, job: Any, per_run: int, window: Any, derivation: Any
) -> None:
    """The DICOM series (dicom_series.SeriesJob), slice by slice into the report; a bar of slices done."""
    from tqdm import tqdm

    def run(batch: np.ndarray) -> np.ndarray:
        result, run.scores = rec.run(batch, return_scores=True)  # type: ignore[attr-defined]
        report.add_run(rec.last_timings)  # scores: read by dicom_series.scores_of
        return result

    with tqdm(total=job.n_slices, unit="slice", desc="series", disable=None, leave=False) as bar:
        outcomes = job.run(
            run,
            batch=per_run,
            window=window,
            derivation=derivation,
            check=lambda image: check_file(rec, image),  # the one input rule, as for other files
            progress=bar.update,
        )
    for outcome in outcomes:
        item = FileOutcome(outcome.path, outcome.output or job.plan.get(outcome.path, report.out))
        item.details["series"] = outcome.series
        if outcome.scores is not None:  # the same fields as a single file's (note_scores)
            item.details["consistency"], item.details["flagged"] = outcome.scores, outcome.flagged
        if outcome.status == "ok":
            item.status, item.images = "written", 1
        else:
            item.fail(outcome.error or "failed")
        report.files.append(item)
    report.series = job.summary()


@click.command("run", cls=Command, epilog=RUN_EPILOG)
@click.argument("artifact", type=ArtifactPath())  # also models/NAME, models/NAME@N (runtime/versions.py)
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
    "--dicom-clip",
    "dicom_clip",
    is_flag=True,
    help="DICOM outputs: store values outside the window at its edges (said in DerivationDescription). "
    "Default: every pixel whose source lies outside the window keeps its source value.",
)
@click.option(
    "--no-consistency",
    "no_consistency",
    is_flag=True,
    help="Skip the artifact's consistency check (no scores, no warnings, no cost).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Check the artifact's golden outputs here first (recon verify); stop on failure.",
)
@click.option(
    "--serial",
    is_flag=True,
    help="Read, run and write one step after another (default: the next files are read and the finished "
    "ones written while a batch runs; same files, same bytes).",
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
    dicom_clip: bool,
    no_consistency: bool,
    verify: bool,
    serial: bool,
    as_json: bool,
) -> int:
    """Reconstruct image files (PNG, TIFF, NPY, DICOM) with an exported artifact.

    INPUTS are files or folders. CT artifacts take sinograms (NPY/TIFF, n_angles × n_detectors). Image
    artifacts take any size: whole where the graph can, as blended tiles above its maximum side.
    A file that cannot be read or does not fit the artifact is reported and skipped; the others are
    written, and the exit status is 1 when any file failed. A folder entry that is not an image recon
    reads (sub-folder, hidden file, unknown format) is reported as skipped, and the exit status is 1 too.
    DICOM files inside a folder (any name) are grouped by series and ordered; each source series becomes a
    new derived series in OUT/<series>/0001.dcm, …; a series that does not hold together (two studies, a
    repeated instance, two slices at one position, two sizes) is not written at all, each slice reported
    (recon.runtime.io.dicom_series). An existing output is never replaced without --force, even one made
    by another process during the run. DICOM outputs keep every source value outside the window
    (--dicom-clip clips, and says so in the tags). Every output is scored by the artifact's
    consistency check: a flagged file gets one warning line on stderr, its scores in --json, and (DICOM)
    a note in ImageComments / DerivationDescription.
    """
    started = time.perf_counter()
    report = RunReport(artifact, out)
    created = not out.exists()  # this run makes --out: removed again when nothing was written into it
    try:
        with signals_interrupt():  # SIGTERM/SIGHUP as Ctrl-C: no temporary file left, the summary printed
            return _run(report, artifact, inputs, out, backend, batch, precision, threads, force, tile,
                        overlap, dicom_window, dicom_clip, no_consistency, verify, serial)  # fmt: skip
    except Terminated as stop:
        report.error = str(stop)
        click.echo(f"error: {stop}; the files listed as written are complete, no other was written", err=True)
        raise SystemExit(stop.exit_code) from None
    except BaseException as error:
        report.error = "interrupted" if isinstance(error, KeyboardInterrupt) else one_line(error)
        raise
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing written: leave no empty --out that looks like a result
        print_report(report, time.perf_counter() - started, as_json)


def check_options(batch: int | None, threads: int | None, tile: int | None, overlap: int | None) -> None:
    """Every numeric option against recon.runtime.limits or the machine, before anything is read."""
    from recon.runtime import limits

    try:
        limits.check_batch(batch)
        limits.check_threads(threads)
        limits.check_count("--tile", tile, limits.MAX_IMAGE_SIDE, "recon.runtime.limits.MAX_IMAGE_SIDE")
        limits.check_count("--overlap", overlap, limits.MAX_IMAGE_SIDE, "at most a tile's side", low=0)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _run(
    report: RunReport,
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
    dicom_clip: bool,
    no_consistency: bool,
    verify: bool = False,
    serial: bool = False,
) -> int:
    from recon.runtime.io.dicom_derived import run_derivation
    from recon.runtime.io.dicom_series import SeriesJob, series_inputs

    window = _window(dicom_window)
    check_options(batch, threads, tile, overlap)
    skipped: list[tuple[Path, str]] = []
    files = collect_inputs(inputs, skipped)
    report.files = [FileOutcome(p, None, status="skipped", reason=why) for p, why in skipped]
    in_series = series_inputs(inputs)  # DICOM files in folders: by series, not by file name
    files = [f for f in files if f not in set(in_series)]
    series = SeriesJob(in_series, out, force) if in_series else None
    targets = plan_outputs(files, out, force)
    report.files += [FileOutcome(f, t, replace=force) for f, t in zip(files, targets, strict=True)]
    consistency = not no_consistency
    with open_reconstructor(artifact, report, backend, precision, threads, consistency, tile, overlap) as rec:
        if verify:
            verify_before_run(rec)
        out.mkdir(parents=True, exist_ok=True)
        per_run = batch or rec.manifest.batch.opt
        derivation = run_derivation(
            artifact, rec.manifest, rec.backend_name, rec.precision, window,
            "clip" if dicom_clip else "keep",
        )  # fmt: skip
        reconstruct_files(rec, report, per_run, window, derivation, pipelined=not serial)
        if series is not None:
            reconstruct_series(rec, report, series, per_run, window, derivation)
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
        if rec.consistency_skipped:  # a [lean]-only install: images written, unchecked, and it says so
            report.backend["consistency_skipped"] = rec.consistency_skipped
            click.echo(f"warning: {rec.consistency_skipped}", err=True)
        yield rec
