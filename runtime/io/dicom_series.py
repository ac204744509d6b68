"""Whole DICOM series: group files by SeriesInstanceUID, order the slices, reconstruct in batches, write one
derived series per source series.

- Grouping reads headers only (no pixels): files of any name, found by their preamble.
- Order: InstanceNumber, then the position along the slice normal (ImagePositionPatient · (row × column) of
  ImageOrientationPatient), then the file name; slices without a tag sort after those with it.
- Output: a folder per source series under OUT (`<SeriesNumber>-<description>-<uid hash>`), files
  `0001.dcm`, `0002.dcm`, … in slice order; each slice keeps the source's patient, study, frame of reference
  and spatial tags (dicom.derived_dataset), so a viewer overlays it on the source.
- Each slice is read, checked, reconstructed and written on its own account: a bad slice is reported by name
  and reason, the others are written.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime import limits
from recon.runtime.io.dicom import import_pydicom, read_header_only
from recon.runtime.io.dicom_derived import Derivation, flag_note
from recon.runtime.io.imageio import ImageFile, ImageIOError, read_image, write_image


@dataclass
class Slice:
    path: Path
    instance: float | None  # InstanceNumber
    position: float | None  # ImagePositionPatient along the slice normal (mm)
    study: str = ""  # StudyInstanceUID
    sop: str = ""  # SOPInstanceUID
    size: tuple[int, int] | None = None  # (Rows, Columns)

    def key(self) -> tuple[float, float, str]:
        inf = math.inf
        return (
            inf if self.instance is None else self.instance,
            inf if self.position is None else self.position,
            self.path.name,
        )


@dataclass
class Series:
    uid: str
    number: int | None
    description: str
    slices: list[Slice] = field(default_factory=list)
    refused: str | None = None  # why the series is not written (check_series), None when it holds together

    def folder_name(self) -> str:
        """`<SeriesNumber>-<description>-<8 hex of the UID>`: readable, unique per source series."""
        words = re.sub(r"[^A-Za-z0-9.]+", "_", self.description).strip("_.")[:40]
        digest = hashlib.sha256(self.uid.encode()).hexdigest()[:8]
        number = "x" if self.number is None else f"{self.number:04d}"
        return "-".join(part for part in (number, words, digest) if part)


@dataclass
class Outcome:
    """What happened to one input file: "ok" (written to `output`) or "failed" (`error` says why), and the
    consistency check's verdict on its output (`scores` as ImageScore.to_json, `flagged`; None when off)."""

    path: Path
    status: str
    output: Path | None = None
    error: str | None = None
    series: str | None = None
    scores: list[dict[str, Any]] | None = None
    flagged: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "status": self.status,
            "output": None if self.output is None else str(self.output),
            "error": self.error,
            "series": self.series,
            "flagged": self.flagged,
            "consistency": self.scores,
        }


def slice_normal(orientation: Any) -> np.ndarray | None:
    """Row × column direction cosines of ImageOrientationPatient; None when absent or degenerate."""
    try:
        values = np.array([float(v) for v in orientation], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        return None
    normal = np.cross(values[:3], values[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def _position(ds: Any) -> float | None:
    normal = slice_normal(ds.get("ImageOrientationPatient"))
    try:
        position = np.array([float(v) for v in ds.get("ImagePositionPatient")], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if normal is None or position.shape != (3,) or not np.all(np.isfinite(position)):
        return None
    return float(position @ normal)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def group_series(files: Iterable[Path]) -> tuple[list[Series], list[Outcome]]:
    """Series (in order of their first file) with ordered slices, and the files whose header is unreadable.

    Reads headers only (`stop_before_pixels`, large elements deferred).
    """
    pydicom = import_pydicom()
    series: dict[str, Series] = {}
    failed: list[Outcome] = []
    for path in files:
        try:
            ds = read_header_only(path, pydicom)
        except ImageIOError as error:
            failed.append(Outcome(path, "failed", error=str(error)))
            continue
        except Exception as error:  # pydicom raises its own types for damaged headers
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            failed.append(Outcome(path, "failed", error=f"{path}: not a readable DICOM file ({reason})"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "") or f"no-series-uid:{path.parent}"
        if uid not in series:
            number = _float(ds.get("SeriesNumber"))
            series[uid] = Series(
                uid,
                None if number is None else int(number),
                str(ds.get("SeriesDescription", "") or ""),
            )
        size = (_int(ds.get("Rows")), _int(ds.get("Columns")))
        series[uid].slices.append(
            Slice(
                path,
                _float(ds.get("InstanceNumber")),
                _position(ds),
                study=str(ds.get("StudyInstanceUID", "") or ""),
                sop=str(ds.get("SOPInstanceUID", "") or ""),
                size=None if None in size else size,  # type: ignore[arg-type]
            )
        )
    for one in series.values():
        one.slices.sort(key=Slice.key)
        one.refused = check_series(one)
    return list(series.values()), failed


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _repeated(values: list[Any]) -> Any:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def check_series(series: Series) -> str | None:
    """Why the slices filed under one SeriesInstanceUID do not form one series, or None when they do.

    One study, each instance once (SOPInstanceUID, InstanceNumber), distinct positions along the slice
    normal, one size. Which slice is the odd one out is not recon's to guess (two studies under one UID,
    a copied file): a series that does not hold together is written not at all, each slice reported.
    """
    slices = series.slices
    studies = sorted({s.study for s in slices})
    if len(studies) > 1:
        return f"its slices belong to {len(studies)} studies (StudyInstanceUID {', '.join(studies[:3])})"
    for what, values in (
        ("SOPInstanceUID", [s.sop for s in slices if s.sop]),
        ("InstanceNumber", [s.instance for s in slices if s.instance is not None]),
    ):
        twice = _repeated(values)
        if twice is not None:
            shown = f"{twice:g}" if isinstance(twice, float) else twice
            return f"two slices share {what} {shown}"
    positions = [round(s.position, 3) for s in slices if s.position is not None]
    twice = _repeated(positions)
    if twice is not None:
        return f"two slices lie at the same position along the slice normal ({twice:g} mm)"
    sizes = sorted({s.size for s in slices if s.size is not None})
    if len(sizes) > 1:
        listed = ", ".join(f"{r}×{c}" for r, c in sizes[:4])
        return f"its slices have {len(sizes)} sizes ({listed})"
    return None


def check_series_length(series: Series) -> None:
    if len(series.slices) > limits.MAX_IMAGES_PER_FILE:
        raise ImageIOError(
            f"{series.slices[0].path.parent}: series {series.uid} has {len(series.slices)} slices, above "
            f"recon's limit of {limits.MAX_IMAGES_PER_FILE} (recon.runtime.limits.MAX_IMAGES_PER_FILE)"
        )


def plan_outputs(series: list[Series], out: Path, force: bool) -> dict[Path, Path]:
    """Input slice → output file (`OUT/<series folder>/0001.dcm`); refuses existing files without force."""
    plan: dict[Path, Path] = {}
    for one in series:
        check_series_length(one)
        if one.refused:
            continue  # not written: its slices are reported by SeriesJob
        folder = out / one.folder_name()
        width = max(4, len(str(len(one.slices))))
        for k, item in enumerate(one.slices, start=1):
            plan[item.path] = folder / f"{k:0{width}d}.dcm"
    inputs = {p.resolve() for p in plan}
    clash = next((t for t in plan.values() if t.resolve() in inputs), None)
    if clash is not None:
        raise ValueError(f"--out {out} would overwrite the input {clash}; choose another output folder")
    existing = [t for t in plan.values() if t.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(f"{existing[0]}{more} already exist(s); pass --force to overwrite")
    return plan


Reconstruct = Callable[[np.ndarray], Any]  # (B, H, W) float32 in [0, 1] → (B, H, W)
# Errors that concern one slice (ImageIOError and ArtifactError are ValueErrors): reported, the others go on.
FILE_ERRORS = (ValueError, OSError, MemoryError)


class SeriesJob:
    """The series found among `files`, their output plan, and after `run` one outcome per file.

    Everything that can be refused without pixels (unreadable headers, too many slices, outputs that would
    overwrite) is settled at construction, before a model is loaded.
    """

    def __init__(self, files: Iterable[Path], out: Path, force: bool = False) -> None:
        self.series, self.outcomes = group_series(files)
        self.plan = plan_outputs(self.series, out, force)
        self.force = force
        for one in self.series:  # checked before anything is written: reported, never half-written
            if one.refused:
                reason = f"series {one.uid} not written: {one.refused}"
                self.outcomes += [
                    Outcome(s.path, "failed", error=f"{s.path}: {reason}", series=one.uid) for s in one.slices
                ]

    @property
    def n_slices(self) -> int:
        return len(self.plan)

    def run(
        self,
        reconstruct: Reconstruct,
        *,
        batch: int,
        window: tuple[float, float] | None = None,
        derivation: Derivation | None = None,
        check: Callable[[ImageFile], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Reconstruct every slice in batches of ≤ `batch` (one series, one size per batch) and write it.

        `check(image)` may raise ValueError to refuse one slice (recon-run passes `Reconstructor.prepare`:
        the one input rule); `progress(n)` is told each n slices done. A batch the network refuses is run
        slice by slice to tell which fails. Returns the outcomes (header failures first, then series and
        slice order). Python API: `SeriesJob(files, out).run(reconstructor.run, batch=8)`.
        """
        derivation = derivation or Derivation()
        for one in self.series:
            if one.refused:
                continue
            group: list[ImageFile] = []
            for item in one.slices:
                image = self._read(item.path, one.uid, window, check)
                if image is None:
                    if progress is not None:
                        progress(1)
                    continue
                if group and group[0].data.shape != image.data.shape:
                    self._flush(group, one.uid, reconstruct, derivation, progress)  # a batch holds one size
                group.append(image)
                if len(group) >= batch:
                    self._flush(group, one.uid, reconstruct, derivation, progress)
            self._flush(group, one.uid, reconstruct, derivation, progress)
        return self.outcomes

    def _read(
        self, path: Path, uid: str, window: Any, check: Callable[[ImageFile], None] | None
    ) -> ImageFile | None:
        try:
            image = read_image(path, dicom_window=window)
            if image.format != "dicom":
                raise ImageIOError(f"{path}: not a DICOM file")
            if check is not None:
                check(image)
        except FILE_ERRORS as error:
            self.outcomes.append(Outcome(path, "failed", error=str(error), series=uid))
            return None
        return image

    def _flush(
        self,
        group: list[ImageFile],
        uid: str,
        reconstruct: Reconstruct,
        derivation: Derivation,
        progress: Callable[[int], None] | None,
    ) -> None:
        if not group:
            return
        try:
            results = list(reconstruct(np.stack([image.data for image in group])))
        except FILE_ERRORS as error:  # run each slice alone, to tell which one the network refuses
            if len(group) == 1:
                self.outcomes.append(Outcome(group[0].path, "failed", error=str(error), series=uid))
            else:
                for image in group:
                    self._flush([image], uid, reconstruct, derivation, None)
        else:
            scores = scores_of(reconstruct, len(group))
            for image, result, score in zip(group, results, scores, strict=True):
                note = None if score is None else flag_note([score])
                if note:
                    image.meta["consistency_note"] = note  # into ImageComments / DerivationDescription
                target = self.plan[image.path]
                outcome = _write(image, target, result, derivation, uid, self.force)
                if score is not None:
                    outcome.scores, outcome.flagged = [score.to_json()], bool(score.flagged)
                self.outcomes.append(outcome)
        if progress is not None:
            progress(len(group))
        group.clear()

    def summary(self) -> list[dict[str, Any]]:
        """Per source series: UID, number, description, slices, written, failed, flagged, output folder
        (None for a refused series, with `refused` saying why)."""
        by_path = {o.path: o for o in self.outcomes}
        rows = []
        for one in self.series:
            written = sum(1 for s in one.slices if getattr(by_path.get(s.path), "status", None) == "ok")
            rows.append(
                {
                    "series_uid": one.uid,
                    "series_number": one.number,
                    "description": one.description,
                    "slices": len(one.slices),
                    "written": written,
                    "failed": len(one.slices) - written,
                    "flagged": sum(bool(getattr(by_path.get(s.path), "flagged", False)) for s in one.slices),
                    "out": None if one.refused else str(self.plan[one.slices[0].path].parent),
                    **({"refused": one.refused} if one.refused else {}),
                }
            )
        return rows


def scores_of(reconstruct: Reconstruct, n: int) -> list[Any]:
    """The consistency scores of the last call of `reconstruct`, one per image (None each when it has none).

    `Reconstructor.run` keeps them as its owner's `last_scores` (per thread); another callable may set its
    own `scores` attribute on each call (recon-run's does).
    """
    scores = getattr(reconstruct, "scores", None)
    if scores is None:
        scores = getattr(getattr(reconstruct, "__self__", None), "last_scores", None)
    if scores is None or len(scores) != n:
        return [None] * n
    return list(scores)


def _write(
    image: ImageFile, target: Path, result: np.ndarray, derivation: Derivation, uid: str, replace: bool
) -> Outcome:
    image.meta["derivation"] = derivation  # dicom.derived_dataset takes the run's series from here
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, result, image, replace)  # atomic, and never over a file unless --force
    except FILE_ERRORS as error:  # one slice's failure is reported, the others go on
        return Outcome(image.path, "failed", error=str(error), series=uid)
    return Outcome(image.path, "ok", output=target, series=uid)


def series_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """The DICOM files (any name, by preamble) directly inside the folders among `inputs`, sorted.

    Files named one by one keep the per-file path (output under their own name).
    """
    from recon.runtime.io.imageio import detect_format

    found: list[Path] = []
    for folder in map(Path, inputs):
        if folder.is_dir():
            found.extend(
                sorted(
                    p
                    for p in folder.iterdir()
                    if p.is_file() and not p.name.startswith(".") and detect_format(p) == "dicom"
                )
            )
    return found
