"""Plain-file helpers shared by every layer: hashing, and atomic writes (temp file beside, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

# A file name may hold at most NAME_MAX bytes (255 on Linux, macOS and Windows file systems).
NAME_MAX = 255


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _temp_name(name: str) -> str:
    """`.{name}.{random}.tmp`, with `name` shortened so the whole stays within NAME_MAX bytes."""
    token = secrets.token_hex(6)
    room = NAME_MAX - len(f"..{token}.tmp".encode())
    stem = name.encode()[:room].decode(errors="ignore")  # never cut a UTF-8 character in half
    return f".{stem}.{token}.tmp"


def temp_beside(path: str | os.PathLike) -> tuple[int, Path]:
    """A new, empty, uniquely named file beside `path` (fd, path), with the permissions of a plain file.

    Not `tempfile.mkstemp`: its files are 0600, and after the rename the manifest or image would be
    unreadable to the other accounts (scanner services) that read it.
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / _temp_name(path.name)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp  # umask applies
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: could not create a temporary file beside {path.name}")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
