"""Write an artifact directory atomically: build it in a temp dir beside the target, then rename.

Readers (and a crash at any point) see either no artifact, the old one, or the new one whole, never a half:
- every file is written into `.NAME.partial-PID-XXXX/` in the target's parent (same filesystem, so the final
  rename is atomic) and fsynced before the rename;
- a new target appears with one `rename`; an existing one (`force=True`) is swapped with the new one in
  a single `renameat2(RENAME_EXCHANGE)` on Linux, then the old tree (now under the temp name) is deleted.
  Where that call is missing, the old tree is first renamed aside: the target is briefly absent, never half
  written;
- a process killed midway leaves only a `.NAME.partial-PID-*` folder; the next export of that target removes
  those whose PID is no longer alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType

from recon.export.errors import ExportError

# Test hook: `RECON_EXPORT_KILL_AT=<stage>` SIGKILLs the process at that checkpoint, so tests can prove that
# a crash at any stage leaves no artifact behind (see tests/export/test_artifact.py).
KILL_ENV = "RECON_EXPORT_KILL_AT"


def checkpoint(stage: str) -> None:
    """Mark a point in the export where a crash must leave nothing half-written."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(target: Path) -> list[Path]:
    """Delete temp folders left by killed exports of `target` (their PID is gone); return what was removed."""
    removed = []
    pattern = re.compile(re.escape(_partial_prefix(target)) + r"(\d+)-")
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


class ArtifactWriter:
    """Context manager: `with ArtifactWriter(target, force) as tmp: ...write into tmp...; writer.commit()`.

    Leaving the block without `commit()` (an error, Ctrl-C) deletes the temp folder; the target is untouched.
    """

    def __init__(self, target: str | os.PathLike, *, force: bool = False) -> None:
        self.target = Path(target).absolute()
        self.force = force
        self.temp: Path | None = None
        self.committed = False

    def check_target(self) -> None:
        """Fail early (before any costly work) when the target exists and `force` was not given."""
        if self.target.exists() and not self.force:
            raise ExportError(f"{self.target} already exists; pass --force to replace it")
        if self.target.exists() and not self.target.is_dir():
            raise ExportError(
                f"{self.target} exists and is not a directory; remove it or choose another --out"
            )

    def __enter__(self) -> Path:
        self.check_target()
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ExportError(f"cannot create {parent}: {error.strerror}") from None
        remove_stale_partials(self.target)
        prefix = f"{_partial_prefix(self.target)}{os.getpid()}-"
        try:
            self.temp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        except OSError as error:
            raise ExportError(f"cannot write in {parent}: {error.strerror}") from None
        return self.temp

    def commit(self) -> Path:
        """Make the finished temp folder the target, atomically; returns the target."""
        assert self.temp is not None, "commit() outside the with-block"
        self.check_target()
        _fsync_tree(self.temp)
        checkpoint("before-commit")
        self.temp.chmod(0o755)  # mkdtemp makes it 0700; an artifact is meant to be read by others
        if not self.target.exists():
            os.rename(self.temp, self.target)
        elif exchange_paths(self.temp, self.target):
            checkpoint("after-swap")  # the old tree now sits under the temp name: stale, cleaned next time
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            aside = self.target.parent / f"{_partial_prefix(self.target)}{os.getpid()}-old"
            os.rename(self.target, aside)
            os.rename(self.temp, self.target)
            shutil.rmtree(aside, ignore_errors=True)
        _fsync_dir(self.target.parent)
        self.committed = True
        return self.target

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.committed and self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
