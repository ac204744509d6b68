"""`LiveModel`: a host's handle on a model folder that follows `recon models pin|rollback` and new
verifications at the next call, never within one.

Each call takes the Reconstructor that is current when it starts and runs the whole call on it (all its
batches and tiles); a switch opens the new version beside, makes it current for the calls that start after,
and closes the old one once its last call returned. A call therefore returns one version's images, and
`last_version` says which.

Noticing a change costs three `stat` calls per `run` (the folder, its records, the pin: every change renames
something into one of them). Timestamps can be coarse (a few ms), so within a second of the last change the
folder is resolved in full at each call rather than trusted to its stamps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from recon.runtime.reconstructor import Reconstructor
from recon.runtime.versions import ModelFolder

log = logging.getLogger("recon.runtime")
SETTLED_NS = 1_000_000_000  # a change older than this has a stamp that any later change must differ from


class LiveModel:
    """Runs whichever version of `models/NAME` is active now (pinned, else newest verified).

    `LiveModel("models/NAME", backend="cpu")`: the options are those of `Reconstructor.from_artifact`.
    If the newly active version cannot be opened, `run` raises (it does not keep serving a version the
    site has moved away from) and tries again at the next call.
    """

    def __init__(self, folder: str | os.PathLike, **options: Any) -> None:
        self.folder = ModelFolder(folder)
        self._options = options
        self._lock = threading.Lock()  # current, users, retired
        self._switching = threading.Lock()  # one thread opens a new version at a time
        self._local = threading.local()
        self._users: dict[int, int] = {}
        self._retired: dict[int, Reconstructor] = {}
        self._closed = False
        self._token: tuple[Any, ...] | None = None
        self._resolved_ns = 0
        self._current: Reconstructor | None = None
        self._refresh()

    @property
    def version(self) -> int | None:
        """The version the next call starts on (as of the last check)."""
        current = self._current
        return None if current is None else current.version

    @property
    def reconstructor(self) -> Reconstructor:
        assert self._current is not None
        return self._current

    @property
    def last_version(self) -> int | None:
        """The version this thread's last `run` ran on, all of it."""
        return getattr(self._local, "version", None)

    # -- switching ---------------------------------------------------------------------------------------
    def _stale(self, token: tuple[Any, ...]) -> bool:
        if token != self._token:
            return True
        newest = max((stamp[0] for stamp in token if stamp is not None), default=0)
        return self._resolved_ns - newest < SETTLED_NS  # a change in the same clock tick would not show

    def _refresh(self) -> None:
        token = self.folder.state_token()
        if not self._stale(token):
            return
        with self._switching:
            token = self.folder.state_token()
            if not self._stale(token) and self._current is not None:
                return
            resolved_ns = time.time_ns()
            version, why = self.folder.active()
            if self._current is None or version != self._current.version:
                fresh = Reconstructor.from_artifact(f"{self.folder.path}@{version}", **self._options)
                log.info("recon.runtime: %s now runs version %d (%s)", self.folder.path, version, why)
                self._install(fresh)
            self._token, self._resolved_ns = token, resolved_ns

    def _install(self, fresh: Reconstructor) -> None:
        with self._lock:
            old, self._current = self._current, fresh
            self._users[id(fresh)] = 0
            idle = old is not None and self._users.get(id(old), 0) == 0
            if idle:
                del self._users[id(old)]
            elif old is not None:
                self._retired[id(old)] = old  # closed by its last call (_release)
        if old is not None and idle:
            old.close()

    def _acquire(self) -> Reconstructor:
        if self._closed:
            raise RuntimeError("this LiveModel is closed")
        self._refresh()
        with self._lock:
            current = self._current
            assert current is not None
            self._users[id(current)] = self._users.get(id(current), 0) + 1
            return current

    def _release(self, used: Reconstructor) -> None:
        with self._lock:
            self._users[id(used)] -= 1
            done = self._users[id(used)] == 0 and id(used) in self._retired
            if done:
                del self._retired[id(used)], self._users[id(used)]
        if done:
            used.close()

    # -- running -------------------------------------------------------------------------------------------
    def run(self, images: Any, return_scores: bool = False) -> Any:
        """`Reconstructor.run` on the active version; the whole call on that one version."""
        reconstructor = self._acquire()
        try:
            result = reconstructor.run(images, return_scores=return_scores)
            self._local.version = reconstructor.version
            return result
        finally:
            self._release(reconstructor)

    __call__ = run

    def close(self) -> None:
        self._closed = True
        with self._lock:
            everything = [r for r in (self._current, *self._retired.values()) if r is not None]
        for reconstructor in everything:
            reconstructor.close()  # waits for its calls in flight

    def __enter__(self) -> LiveModel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LiveModel({str(self.folder.path)!r}, version={self.version})"
