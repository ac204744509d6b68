"""Numbered versions of a model, Triton's layout, and which one a site runs.

    models/NAME/
      1/               an artifact (manifest.json, model.onnx, golden/, ...), never changed once written
      2/
      verification/    1.json, 2.json: the last `recon verify` of each version on this site (its record)
      pin.json         {"version": 1, ...}: optional; present, it names the version to run

The active version is the pinned one, else the newest *verified* one: its record passed and names the
manifest's current sha256 (the manifest lists every file's sha256, so a record vouches for those exact
bytes; a version replaced or tampered with after verification is unverified again). Triton ignores
non-numeric entries in a model folder, so the same folder can also be served by Triton.

Every write is atomic (a temp file beside, fsynced, then renamed; the folder fsynced after): a crash
leaves the old pin or the new one, never neither and never half of one. `RECON_VERSIONS_KILL_AT=pin` kills
the process between the temp file and the rename (the crash test's hook, as export's checkpoint).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from recon.runtime.artifact.manifest import MANIFEST_NAME, ArtifactError
from recon.runtime.io.files import FileRefused, json_safe, read_at_most, sha256_of, temp_beside

PIN_FILE = "pin.json"
RECORDS = "verification"
VERSION = re.compile(r"[1-9][0-9]{0,8}")  # Triton's version folders: positive integers, no leading zero
KILL_ENV = "RECON_VERSIONS_KILL_AT"
MAX_RECORD_BYTES = 1 << 20


def _checkpoint(stage: str) -> None:
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, data: Any, stage: str) -> None:
    """JSON to a temp file beside `path`, fsynced, renamed over it, the folder fsynced: old or new."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(json_safe(data), handle, indent=2, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _checkpoint(stage)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _read_json(path: Path) -> Any:
    """The file's JSON; None when it does not exist (also when it was removed while being read: an unpin
    racing a running host's look-up is no error)."""
    try:
        return json.loads(read_at_most(path, MAX_RECORD_BYTES))
    except (FileRefused, ValueError) as error:
        if getattr(error, "errno", None) == errno.ENOENT:  # decided by the failed open, not a second look
            return None
        raise ArtifactError(f"{path}: unreadable ({error}); delete it or write it again") from None


def split_reference(path: str | os.PathLike) -> tuple[Path, int | None]:
    """ "models/NAME@2" -> (models/NAME, 2); anything else -> (path, None)."""
    text = os.fspath(path)
    base, at, number = text.rpartition("@")
    if at and VERSION.fullmatch(number):
        return Path(base), int(number)
    return Path(text), None


def is_model_folder(path: str | os.PathLike) -> bool:
    """A folder of numbered versions (and no manifest of its own)."""
    path = Path(path)
    return path.is_dir() and not (path / MANIFEST_NAME).exists() and bool(ModelFolder(path).versions())


class ModelFolder:
    """One model's numbered versions, their verification records and the pin."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # -- reading --------------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        """The version numbers that hold an artifact, ascending."""
        try:
            entries = list(self.path.iterdir())
        except OSError:
            return []
        return sorted(
            int(e.name)
            for e in entries
            if VERSION.fullmatch(e.name) and not e.is_symlink() and (e / MANIFEST_NAME).is_file()
        )

    def version_dir(self, version: int) -> Path:
        if version not in self.versions():
            raise ArtifactError(
                f"{self.path}: no version {version} (versions: {self._listing()}); see recon models list"
            )
        return self.path / str(version)

    def _listing(self) -> str:
        return ", ".join(map(str, self.versions())) or "none"

    def next_version(self) -> int:
        """The number a new export takes: one above every folder, even one that holds no artifact yet."""
        taken = (
            [int(e.name) for e in self.path.iterdir() if VERSION.fullmatch(e.name)]
            if self.path.is_dir()
            else []
        )
        return max(taken, default=0) + 1

    def record(self, version: int) -> dict[str, Any] | None:
        record = _read_json(self.path / RECORDS / f"{version}.json")
        return record if isinstance(record, dict) else None

    def verified(self, version: int) -> bool:
        """Its last record passed and vouches for the manifest as it is now."""
        record = self.record(version)
        if not record or record.get("passed") is not True:
            return False
        try:
            return record.get("manifest_sha256") == sha256_of(self.path / str(version) / MANIFEST_NAME)
        except OSError:
            return False

    def pinned(self) -> int | None:
        path = self.path / PIN_FILE
        pin = _read_json(path)
        if pin is None:
            return None
        version = pin.get("version") if isinstance(pin, dict) else None
        if not (isinstance(version, int) and not isinstance(version, bool) and version > 0):
            raise ArtifactError(f"{path}: names no version ({pin!r}); run recon models pin or unpin")
        return version

    def active(self) -> tuple[int, str]:
        """(the version to run, why): the pinned one, else the newest verified one."""
        pinned = self.pinned()
        if pinned is not None:
            self.version_dir(pinned)  # it must exist
            return pinned, f"version {pinned} is pinned ({self.path / PIN_FILE})"
        verified = [v for v in self.versions() if self.verified(v)]
        if not verified:
            raise ArtifactError(
                f"{self.path}: no verified version (versions: {self._listing()}); run `recon verify "
                f"{self.path}` on this machine first, or pin one (recon models pin)"
            )
        return verified[-1], f"version {verified[-1]} is the newest verified one"

    def state_token(self) -> tuple[Any, ...]:
        """What changes whenever the active version may change: the folder's, records' and pin's stats."""

        def stamp(path: Path) -> tuple[int, int] | None:
            try:
                info = os.stat(path)
            except OSError:
                return None
            return info.st_mtime_ns, info.st_ino

        return stamp(self.path), stamp(self.path / RECORDS), stamp(self.path / PIN_FILE)

    def listing(self) -> list[dict[str, Any]]:
        """Per version: verified, when, the record's outcome, pinned, active."""
        try:
            active: int | None = self.active()[0]
        except ArtifactError:
            active = None
        pinned = self.pinned()
        rows = []
        for version in self.versions():
            record = self.record(version) or {}
            rows.append({
                "version": version,
                "verified": self.verified(version),
                "last_verification": record.get("verified_at"),
                "last_outcome": None if not record else ("passed" if record.get("passed") else "failed"),
                "pinned": version == pinned,
                "active": version == active,
            })  # fmt: skip
        return rows

    # -- writing --------------------------------------------------------------------------------------
    def write_record(self, version: int, report: dict[str, Any]) -> Path:
        self.version_dir(version)
        (self.path / RECORDS).mkdir(exist_ok=True)
        path = self.path / RECORDS / f"{version}.json"
        write_atomic(path, {**report, "version": version}, "record")
        return path

    def pin(self, version: int, reason: str = "pinned", force: bool = False) -> None:
        """Run `version` from the next call on, whatever is newer; an unverified one only with `force`."""
        self.version_dir(version)
        if not force and not self.verified(version):
            raise ArtifactError(
                f"{self.path}: version {version} is not verified on this machine; run `recon verify "
                f"{self.path}@{version}` first (or pin it anyway with --force)"
            )
        write_atomic(self.path / PIN_FILE, {"version": version, "reason": reason, "at": _now()}, "pin")

    def unpin(self) -> None:
        """Back to the newest verified version."""
        (self.path / PIN_FILE).unlink(missing_ok=True)

    def rollback(self) -> tuple[int, int]:
        """Pin the newest verified version older than the active one; return (from, to)."""
        current, _ = self.active()
        older = [v for v in self.versions() if v < current and self.verified(v)]
        if not older:
            raise ArtifactError(
                f"{self.path}: no verified version older than {current} to roll back to "
                f"(versions: {self._listing()})"
            )
        self.pin(older[-1], reason=f"rollback from {current}")
        return current, older[-1]


def resolve_artifact(path: str | os.PathLike) -> tuple[Path, int | None]:
    """(the artifact directory to open, its version or None) for an artifact, "models/NAME" (the active
    version) or "models/NAME@N" (version N, verified or not: the caller named it)."""
    base, version = split_reference(path)
    if version is not None and not Path(path).exists():
        return ModelFolder(base).version_dir(version), version
    if is_model_folder(base):
        folder = ModelFolder(base)
        version, _ = folder.active()
        return folder.path / str(version), version
    path = Path(path)
    in_folder = VERSION.fullmatch(path.name) and (path / MANIFEST_NAME).is_file()
    return path, int(path.name) if in_folder else None
