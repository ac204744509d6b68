"""Qualify an artifact on this machine: its golden set on every backend/precision asked for (or every one
the export measured that runs here), one report, and, for a version in a model folder, its record.

`qualify("models/NAME")` checks the newest version (the one a site is installing); "models/NAME@2" that
version; a plain artifact folder is checked without a record. The record is what makes a version
*verified* (runtime/versions.py): `Reconstructor.from_artifact("models/NAME")` runs only verified ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recon.runtime.artifact.manifest import ArtifactError, load_manifest
from recon.runtime.backends import BackendError, resolve_name
from recon.runtime.reconstructor import Reconstructor
from recon.runtime.verify import GoldenResult, verification_report
from recon.runtime.versions import ModelFolder, is_model_folder, resolve_artifact, split_reference


def artifact_to_verify(path: str | os.PathLike) -> tuple[Path, ModelFolder | None, int | None]:
    """(artifact directory, its model folder or None, its version or None); a folder: its newest version."""
    base, version = split_reference(path)
    if version is None and is_model_folder(base):
        folder = ModelFolder(base)
        version = folder.versions()[-1]
        return folder.path / str(version), folder, version
    directory, version = resolve_artifact(path)
    return directory, (ModelFolder(directory.parent) if version is not None else None), version


def _pairs(directory: Path, backend: str | None, precision: str | None) -> list[tuple[str, str]]:
    """The backend/precision pairs to run: as asked, else those the export measured a tolerance for."""
    manifest = load_manifest(directory, verify=False)
    measured = [tuple(key.split("/")) for key in ((manifest.golden or {}).get("tolerances") or {})]
    if backend is not None and precision is not None:
        return [(resolve_name(backend), precision)]
    if backend is not None:
        chosen = [(b, p) for b, p in measured if b == resolve_name(backend)]
        return chosen or [(resolve_name(backend), "fp32")]
    if precision is not None:
        return [(b, p) for b, p in measured if p == precision] or [("onnxruntime-cpu", precision)]
    return measured or [("onnxruntime-cpu", "fp32")]  # (a v2 artifact: reports that it has no golden set)


def qualify(
    path: str | os.PathLike,
    backend: str | None = None,
    precision: str | None = None,
    *,
    threads: int | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """Run the golden set; return the report (passed, results, skipped, environment, version, record)."""
    directory, folder, version = artifact_to_verify(path)
    manifest = load_manifest(directory, verify=True)
    asked = backend is not None or precision is not None
    results: list[GoldenResult] = []
    skipped: list[str] = []
    for name, prec in _pairs(directory, backend, precision):
        try:
            rec = Reconstructor.from_artifact(directory, backend=name, precision=prec, threads=threads)
        except (BackendError, ArtifactError, ValueError) as error:
            why = str(error).splitlines()[0]
            if asked:  # what was asked for must run
                results.append(GoldenResult(name, prec, False, f"could not start here: {why}"))
            else:
                skipped.append(f"{name}/{prec}: not available here ({why})")
            continue
        with rec:
            results.append(rec.verify())
    report = verification_report(directory, manifest.name, results)
    report.update(version=version, skipped=skipped, record=None)
    if not results:
        report["passed"] = False
        report["reason"] = "no backend/precision the artifact has a tolerance for runs here"
    if record and folder is not None and version is not None:
        report["record"] = str(folder.write_record(version, report))
    return report
