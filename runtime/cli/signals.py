"""SIGTERM and SIGHUP handled as SIGINT is: the work in progress stops cleanly, and the command reports it.

systemd and `docker stop` send SIGTERM, a closed terminal SIGHUP; by default either kills Python outright,
leaving a hidden `*.tmp` beside a half-written output and printing no summary. Inside `signals_interrupt()`
they raise `Terminated` (a KeyboardInterrupt) where the main thread is, so every `except BaseException` /
`finally` that cleans up for Ctrl-C (imageio.write_image removes its temporary file) does so for them too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by `signum` (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # as shells report a process killed by the signal


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise Terminated in the main thread; the old handlers after it."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal works there only
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, stop) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
