"""File I/O overlapped with inference: the next files are read while the current batch runs, and finished
results are written while the next batch runs.

Two small pieces, each one worker thread and a bounded queue, so memory stays within a few batches and the
order of reads and of writes is the order of the inputs:
- `ReadAhead(items, read, depth)`: iterate over (item, value, error) in input order; `read(item)` runs on the
  worker at most `depth` items ahead of the consumer. An error raised by `read` is handed back with its
  item, not raised, so the caller accounts for it exactly as a serial loop would.
- `WriteBehind(depth)`: `submit(function, *args)` queues a call (blocking when `depth` calls wait); the calls
  run one after another on the worker in submission order; `close()` waits for every queued call.
  A call's exception is the call's own business (the caller wraps its steps); an exception that escapes is
  re-raised by `close()`.

Decoders and encoders (zlib in PNG/TIFF, numpy copies, file writes) release the GIL for most of their time,
and inference engines run their own threads outside it, so one worker per side overlaps the stages on a
2-core machine without taking the engine's cores for long. Both stop promptly when the consumer stops:
`close()` (or leaving the `with` block) tells the reader to stop after its current item.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

_DONE = object()


class ReadAhead(Generic[Item]):
    """`for item, value, error in ReadAhead(items, read, depth)`: reads up to `depth` items ahead."""

    def __init__(
        self, items: Iterable[Item], read: Callable[[Item], Any], depth: int = 2, overlap: bool = True
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._items = list(items)
        self._read = read
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.seconds = 0.0  # time spent in `read`
        self._thread: threading.Thread | None = None
        if overlap:  # without: each item is read when the consumer asks for it (the serial run)
            self._thread = threading.Thread(target=self._work, name="recon-read-ahead", daemon=True)
            self._thread.start()

    def _put(self, entry: Any) -> bool:
        """Queue an entry unless the consumer has stopped (checked every 0.1 s while the queue is full)."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _entry(self, item: Item) -> tuple[Item, Any, BaseException | None]:
        mark = time.perf_counter()
        try:
            entry = (item, self._read(item), None)
        except Exception as error:  # handed to the consumer with its item, in order
            entry = (item, None, error)
        self.seconds += time.perf_counter() - mark
        return entry

    def _work(self) -> None:
        for item in self._items:
            if self._stop.is_set() or not self._put(self._entry(item)):
                return
        self._put(_DONE)

    def __iter__(self) -> Iterator[tuple[Item, Any, BaseException | None]]:
        if self._thread is None:
            yield from map(self._entry, self._items)
            return
        while True:
            entry = self._queue.get()
            if entry is _DONE:
                return
            yield entry

    def close(self) -> None:
        """Stop reading (after the item in hand) and wait for the worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ReadAhead[Item]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriteBehind:
    """Runs submitted calls one by one on a worker thread, in order, at most `depth` waiting."""

    def __init__(self, depth: int = 2, overlap: bool = True) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._raised = False
        self._cancelled = False
        self.seconds = 0.0  # time spent in the calls
        self._thread: threading.Thread | None = None
        if overlap:  # without: each call runs at once, in the caller's thread (the serial run)
            self._thread = threading.Thread(target=self._work, name="recon-write-behind", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _DONE:
                return
            self._call(*entry)

    def _call(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if self._error is not None or self._cancelled:
            return  # a call failed, or the block was left by an exception: the rest are dropped
        mark = time.perf_counter()
        try:
            function(*args)
        except BaseException as error:
            self._error = error
        self.seconds += time.perf_counter() - mark

    def _raise_once(self) -> None:
        """Re-raise the first escaped error, once; the error stays recorded so later calls are dropped."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self._raise_once()
        if self._thread is not None:
            self._queue.put((function, args))
            return
        self._call(function, args)
        self._raise_once()

    def close(self) -> None:
        """Wait for every queued call; re-raise the first exception that escaped one.

        Interrupted while waiting (Ctrl-C, SIGTERM land in this thread): the call in hand still finishes and
        the queued ones are dropped before the interrupt goes on, so no write is cut off when the process
        ends (the worker is a daemon thread: leaving it running would kill it mid-write)."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put(_DONE)
                self._thread.join()
            except BaseException:
                self._cancelled = True
                self._queue.put(_DONE)  # a second one is harmless: the worker stops at the first
                self._thread.join()
                raise
        self._raise_once()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # leaving by an exception (Ctrl-C, SIGTERM): the call in hand finishes (a write is atomic), the
        # queued ones are dropped, so the command stops at once and what it reports is what is on disk
        self._cancelled = exc_type is not None
        try:
            self.close()
        except BaseException:
            if exc_type is None:  # never hide the exception that is already leaving the block
                raise
