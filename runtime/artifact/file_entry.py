"""The manifest's "files" entries (`FileEntry`), parsed once: every file the artifact lists, with its sha256,
size, kind, precision and (plans) TensorRT facts. A name is a plain name inside the artifact folder, or one
plain name inside its golden folder (format 3: artifact/golden.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recon.runtime import limits
from recon.runtime.artifact.errors import ArtifactError

FILE_KINDS = ("onnx", "tensorrt", "report", "consistency", "golden")
GOLDEN_FOLDER = "golden"  # the one sub-folder an artifact may list files in (artifact/golden.py)
PRECISIONS = ("fp32", "fp16", "int8")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    kind: str
    precision: str | None = None
    tensorrt: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sha256": self.sha256, "size": self.size, "kind": self.kind}
        if self.precision is not None:
            data["precision"] = self.precision
        if self.tensorrt is not None:
            data["tensorrt"] = self.tensorrt
        return data


def _plain(name: Any) -> bool:
    return isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..")


def is_listed_name(name: Any) -> bool:
    """A name "files" may list: a plain name, or one plain name inside the golden folder (nothing deeper)."""
    folder, _, rest = name.partition("/") if isinstance(name, str) else ("", "", "")
    return _plain(name) or (folder == GOLDEN_FOLDER and _plain(rest))


def check_file_entry(name: str, entry: Any, source: str = "manifest.json") -> FileEntry:
    """One entry of "files": a plain name inside the artifact, its sha256, size, kind and precision."""
    if not is_listed_name(name):
        raise ArtifactError(
            f"{source}: file name {name!r} must be a plain name inside the artifact (or {GOLDEN_FOLDER}/NAME)"
        )
    if not isinstance(entry, dict):
        raise ArtifactError(f"{source}: files[{name!r}] must be an object, got {entry!r}; re-export")
    size, precision, tensorrt = entry.get("size"), entry.get("precision"), entry.get("tensorrt")
    problems = {
        "sha256": not (isinstance(entry.get("sha256"), str) and SHA256_PATTERN.fullmatch(entry["sha256"])),
        "size": not (_is_int(size) and 0 <= size <= limits.MAX_ARTIFACT_FILE_BYTES),
        "kind": entry.get("kind") not in FILE_KINDS,
        "precision": not (precision is None or precision in PRECISIONS),
        "tensorrt": not (tensorrt is None or isinstance(tensorrt, dict)),
    }
    bad = [key for key, wrong in problems.items() if wrong]
    if bad:
        expected = {
            "sha256": "64 lowercase hex digits",
            "size": f"an integer 0..{limits.MAX_ARTIFACT_FILE_BYTES}",
            "kind": f"one of {FILE_KINDS}",
            "precision": f"null or one of {PRECISIONS}",
            "tensorrt": "null or an object",
        }[bad[0]]
        raise ArtifactError(
            f"{source}: files[{name!r}].{bad[0]} must be {expected}, got {entry.get(bad[0])!r}; "
            "the artifact is damaged, re-export it"
        )
    return FileEntry(entry["sha256"], size, entry["kind"], precision, tensorrt)
