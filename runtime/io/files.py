"""Plain-file helpers shared by every layer: hashing, and atomic writes (temp file beside, then rename)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
import stat
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
    # cut as the file system's bytes: a Linux name need not be UTF-8 (surrogateescape keeps each byte), and
    # a character cut in half stays a few legal bytes of a temporary name
    stem = os.fsdecode(os.fsencode(name)[:room])
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


def temp_name_beside(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path` (not created): callers record it before creating the file, so
    a signal landing between the two never leaves a file nobody knows of."""
    path = Path(path)
    return path.parent / _temp_name(path.name)


class TargetExists(FileExistsError):
    """Publishing without replacing found the target already there (made by someone else meanwhile)."""


def publish(tmp: str | os.PathLike, path: str | os.PathLike, replace: bool = False) -> None:
    """Move the finished `tmp` to `path`: atomically, and never over an existing file unless `replace`.

    Without `replace`: a hard link (`link(2)` fails with EEXIST when the name exists, atomically, however
    late another process created it), then the temporary name is removed; where the file system has no
    hard links, `renameat2(RENAME_NOREPLACE)` (Linux ≥ 3.15, glibc ≥ 2.28). Neither: refused, never a
    check-then-rename race. Raises TargetExists when the name is taken.
    """
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise TargetExists(f"{path}: already exists (created after the run started); not replaced") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        _rename_noreplace(tmp, path)
        return
    os.unlink(tmp)


def _rename_noreplace(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) through libc (man 2 rename)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOTSUP, f"{path}: this file system has no hard links and libc no renameat2")
    at_fdcwd, rename_noreplace = -100, 1
    if renameat2(at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(path), rename_noreplace) != 0:
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise TargetExists(f"{path}: already exists (created after the run started); not replaced")
        raise OSError(code, os.strerror(code), str(path))


def json_safe(data: Any) -> Any:
    """`data` with every non-finite float as None: JSON has no NaN/Infinity, and recon's readers refuse
    them (a strict parser is what lets `recon inspect --json` promise valid JSON)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(json_safe(data), handle, indent=2, sort_keys=False, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileRefused(ValueError):
    """A file that recon will not read: a link, not a regular file, or not the size it should be.

    `errno` is the operating system's error number when opening it failed (e.g. ENOENT), else None."""

    errno: int | None = None


def open_regular(path: str | os.PathLike, follow_links: bool = False) -> int:
    """A read-only descriptor on `path`, refusing anything but a regular file (and links, by default).

    O_NOFOLLOW: a link (to a file outside the artifact, to /proc/...) is refused rather than followed;
    O_NONBLOCK: opening a FIFO does not wait for a writer; fstat on the descriptor, so what is checked is
    what is read. Input images may be links (`follow_links`): the user named them.
    """
    flags = (
        os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    )
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
        if os.path.islink(path):  # O_NOFOLLOW's ELOOP would read as "too many levels of links"
            raise FileRefused(f"{path}: is a symbolic link; recon reads only regular files, not links")
    try:
        fd = os.open(path, flags)
    except OSError as error:
        refused = FileRefused(f"{path}: cannot be opened ({error.strerror or error})")
        refused.errno = error.errno
        raise refused from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path}: is not a regular file (a device, FIFO, socket or folder)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _held(read: int, size: int) -> str:
    return f"more than {size}" if read > size else str(read)


def read_bounded(path: str | os.PathLike, size: int) -> bytes:
    """Exactly `size` bytes of a regular file that holds exactly that many; never reads more."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(size + 1)  # one byte more tells a longer file from a whole one
    if len(data) != size:
        raise FileRefused(f"{path}: holds {_held(len(data), size)} bytes, expected {size}")
    return data


def sha256_bounded(path: str | os.PathLike, size: int, chunk_size: int = 1 << 20) -> str:
    """The sha256 of a regular file that must hold exactly `size` bytes, reading at most size + 1."""
    digest = hashlib.sha256()
    fd = open_regular(path)
    left = size + 1
    with os.fdopen(fd, "rb") as handle:
        while left > 0 and (block := handle.read(min(chunk_size, left))):
            digest.update(block)
            left -= len(block)
    if left != 1:
        raise FileRefused(f"{path}: holds {_held(size + 1 - left, size)} bytes, expected {size}")
    return digest.hexdigest()


def read_at_most(path: str | os.PathLike, limit: int) -> bytes:
    """The whole of a regular file holding at most `limit` bytes; never reads more than limit + 1."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"{path}: larger than {limit} bytes")
    return data
