"""Derived DICOM slices out: each run writes new series, and the output stores the source's representation.

A `Derivation` (one per run) gives every source series a fresh SeriesInstanceUID and a distinct SeriesNumber,
and names the model, artifact and settings in SeriesDescription and DerivationDescription. Pixels go back
through the reading window into the source's stored representation (runtime/io/dicom.py's convention);
pixels the window clipped keep their source values unless the run asks to clip.
"""

from __future__ import annotations

import copy
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.io.dicom import _number, from_unit, import_pydicom, outside_window
from recon.runtime.io.image_file import ImageFile, ImageIOError


@dataclass
class Derivation:
    """What one run writes: new series (one per source series), numbered and described.

    `description` goes to SeriesDescription (cut to 64 characters), `details` to DerivationDescription. Every
    source series gets a fresh random SeriesInstanceUID the first time one of its slices is written, so two
    runs (other settings, another model) never share a series. SeriesNumber = source number (mod 1000) +
    1000 × a random run number in 1..2 000 000 (IS holds < 2³¹): never the source's, and two runs collide
    with probability 1/2 000 000 even when started in the same second. SeriesDate/SeriesTime are the run's,
    so a PACS lists runs in the order they were made.
    """

    description: str = "recon"
    details: str = "reconstructed by recon"
    # what the outputs store where the source lies outside the window: "keep" its value, or "clip"
    outside_window: str = "keep"
    run_number: int = field(default_factory=lambda: 1 + secrets.randbelow(2_000_000))
    started: time.struct_time = field(default_factory=time.localtime)
    _series: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def series_uid(self, source_uid: str) -> str:
        from pydicom.uid import generate_uid  # pydicom 3.0 uid.py: uuid4-based without entropy_srcs

        with self._lock:
            if source_uid not in self._series:
                self._series[source_uid] = generate_uid()
            return self._series[source_uid]

    def series_number(self, source_number: Any) -> int:
        number = _number(source_number)
        return int(number or 0) % 1000 + 1000 * self.run_number


def run_derivation(
    artifact: str | os.PathLike,
    manifest: Any,
    backend: str,
    precision: str | None,
    window: tuple[float, float] | None,
    outside_window: str = "keep",
) -> Derivation:
    """The derivation of one `recon-run`: its series named after the model, artifact and settings."""
    model = manifest.model.get("name", "?") if isinstance(manifest.model, dict) else "?"
    weights = (manifest.model.get("weights_sha256") or "") if isinstance(manifest.model, dict) else ""
    shown = "header window" if window is None else f"window {window[0]:g}..{window[1]:g}"
    return Derivation(
        description=f"recon {model} {manifest.task} {precision or ''} {Path(artifact).name}".strip(),
        details=(
            f"reconstructed by recon {manifest.recon_version}: model {model}, artifact {manifest.name} "
            f"({Path(artifact).name}), task {manifest.task}, backend {backend}, precision {precision}, "
            f"{shown}" + (f", weights sha256 {weights[:16]}" if weights else "")
        ),
        outside_window=outside_window,
    )


_default_derivation: Derivation | None = None
_default_lock = threading.Lock()


def default_derivation() -> Derivation:
    """The derivation of writes that name none: one per process (pass one per run to tell runs apart)."""
    global _default_derivation
    with _default_lock:
        if _default_derivation is None:
            _default_derivation = Derivation()
        return _default_derivation


def derived_dataset(image: np.ndarray, like: ImageFile, derivation: Derivation | None = None) -> Any:
    """A new instance of a new series derived from `like`: its patient, study and spatial tags, new pixels."""
    pydicom = import_pydicom()
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if image.ndim != 2:
        raise ImageIOError(f"{like.path}: DICOM output is one 2-D slice, got shape {image.shape}")
    derivation = derivation or like.meta.get("derivation") or default_derivation()
    source = like.meta["dataset"]
    ds = copy.deepcopy(source)
    if image.shape != (int(source.Rows), int(source.Columns)):
        ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.SOPInstanceUID = generate_uid()
    source_series = str(source.get("SeriesInstanceUID", "") or source.get("StudyInstanceUID", ""))
    ds.SeriesInstanceUID = derivation.series_uid(source_series)
    ds.SeriesNumber = derivation.series_number(source.get("SeriesNumber"))
    ds.SeriesDescription = derivation.description[:64]
    stored, stored_note = _stored_output(
        image, like, like.meta.get("outside_window", derivation.outside_window)
    )
    # room kept for the flag note: a FLAGGED output must say so whatever the settings' length
    ds.DerivationDescription = "; ".join(filter(None, [derivation.details, stored_note]))[:990]
    annotate_dicom(ds, like.meta.get("consistency_note"))  # a flagged output says so (runtime/consistency.py)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDate = ds.InstanceCreationDate = time.strftime("%Y%m%d", derivation.started)
    ds.SeriesTime = ds.InstanceCreationTime = time.strftime("%H%M%S", derivation.started)
    _reference_source(ds, source, pydicom)
    for stale in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
        if stale in ds:  # facts about the source's pixels, not these
            del ds[stale]
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OB" if stored.itemsize == 1 else "OW"
    ds.file_meta = copy.deepcopy(source.file_meta) if hasattr(source, "file_meta") else pydicom.Dataset()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # always uncompressed little endian out
    # the copy remembers the source's encoding (big endian, implicit VR), which pydicom 3.0's save_as checks
    # against the transfer syntax (filewriter.dcmwrite/write_dataset use Dataset.original_encoding): reset it
    ds.set_original_encoding(False, True, source.get("SpecificCharacterSet"))
    return ds


# What a DICOM output stores where the source lies outside the window the network saw:
# "keep" (the default) the source's stored value, "clip" the window's edge (said in DerivationDescription).
OUTSIDE_WINDOW = ("keep", "clip")


def _stored_output(image: np.ndarray, like: ImageFile, mode: str) -> tuple[np.ndarray, str]:
    """The output's stored integers. The window shapes what the network sees, never what is stored: a
    pixel whose source value lies outside it keeps that value (unless the caller asked for "clip"), so a
    CT slice keeps its air and bone in Hounsfield units, not the window's edges. Returns the integers and
    the note for DerivationDescription (what was kept or clipped)."""
    source, window = like.meta["dataset"], like.meta["window"]
    stored = from_unit(image, source, window)
    if mode not in OUTSIDE_WINDOW:
        raise ImageIOError(f"{like.path}: outside_window {mode!r}; one of {', '.join(OUTSIDE_WINDOW)}")
    shown = f"{window[0]:g}..{window[1]:g}"
    source_stored = like.meta.get("stored")
    if source_stored is None:
        source_stored = source.pixel_array
    if source_stored.shape != stored.shape:
        mode = "clip"  # another geometry: no source value per output pixel to keep
    outside = outside_window(source_stored, source, window) if mode == "keep" else None
    if outside is not None and outside.any():
        stored[outside] = source_stored[outside]
        note = f"values outside the window {shown} kept from the source ({int(outside.sum())} pixels)"
    elif mode == "clip":
        note = f"values clipped to the window {shown}"
    else:
        note = ""
    return stored, note


def _reference_source(ds: Any, source: Any, pydicom: Any) -> None:
    """SourceImageSequence: the slice this one was derived from (PS3.3 C.7.6.1.1.4)."""
    if "SOPInstanceUID" not in source or "SOPClassUID" not in source:
        return
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = [item]


def write_dicom(path: Path, image: np.ndarray, like: ImageFile, derivation: Derivation | None = None) -> None:
    """Write `image` ([0, 1]) as a slice derived from `like` (not atomic: `imageio.write_image` is)."""
    derived_dataset(image, like, derivation).save_as(path, enforce_file_format=True)


def annotate_dicom(ds: Any, note: str | None) -> None:
    """Carry a flag note into a derived DICOM dataset (ImageComments, DerivationDescription); None: no-op."""
    if not note:
        return
    ds.ImageComments = note[:10240]  # LT: at most 10240 characters
    description = str(ds.get("DerivationDescription", "") or "")
    ds.DerivationDescription = (description + "; " if description else "") + "consistency check FLAGGED"


def flag_note(scores: list[Any]) -> str | None:
    """One line for a file whose images were flagged (for logs and DICOM), None when none was.

    `scores` are runtime/consistency.py's ImageScores (`flagged`, `reasons`).
    """
    flagged = [(i, s) for i, s in enumerate(scores) if s.flagged]
    if not flagged:
        return None
    index, first = flagged[0]
    where = f"image {index}: " if len(scores) > 1 else ""
    more = f" (+{len(flagged) - 1} more image(s))" if len(flagged) > 1 else ""
    return (
        f"recon consistency check FLAGGED this output: {where}{'; '.join(first.reasons)}{more}; "
        "the input is not like the calibration data, do not trust this image without review"
    )
