"""File I/O overlapped with inference (runtime/io/overlap.py): order, bounds, errors, and stopping."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from recon.runtime.io.overlap import ReadAhead, WriteBehind


@pytest.mark.parametrize("overlap", [True, False])
def test_read_ahead_yields_every_item_in_order_with_its_own_error(overlap):
    def read(n: int) -> int:
        if n % 3 == 0:
            raise ValueError(f"bad {n}")
        return n * n

    with ReadAhead(range(10), read, depth=2, overlap=overlap) as reader:
        seen = list(reader)
    assert [item for item, _, _ in seen] == list(range(10))
    for item, value, error in seen:
        if item % 3 == 0:
            assert value is None and str(error) == f"bad {item}"
        else:
            assert value == item * item and error is None


def test_read_ahead_reads_at_most_depth_items_ahead_of_the_consumer():
    read_so_far: list[int] = []
    consumed = 0
    worst = 0

    def read(n: int) -> int:
        read_so_far.append(n)
        return n

    with ReadAhead(range(40), read, depth=3) as reader:
        for _ in reader:
            consumed += 1
            time.sleep(0.002)  # a slow consumer: the reader would run away without the bound
            worst = max(worst, len(read_so_far) - consumed)
    # `depth` queued + the one in the worker's hands
    assert worst <= 3 + 1, worst


def test_read_ahead_stops_reading_when_the_consumer_stops():
    read_so_far: list[int] = []
    with ReadAhead(range(1000), lambda n: read_so_far.append(n) or n, depth=2) as reader:
        for item, _, _ in reader:
            if item == 5:
                break
    count = len(read_so_far)
    time.sleep(0.3)
    assert len(read_so_far) == count <= 5 + 2 + 2


def test_write_behind_runs_calls_in_order_on_another_thread_and_close_waits():
    done: list[int] = []
    threads: set[str] = set()

    def write(n: int) -> None:
        time.sleep(0.001)
        threads.add(threading.current_thread().name)
        done.append(n)

    with WriteBehind(depth=2) as writer:
        for n in range(20):
            writer.submit(write, n)
    assert done == list(range(20))  # close() waited for all of them
    assert threads == {"recon-write-behind"}


def test_write_behind_re_raises_an_escaped_error_and_drops_later_calls():
    done: list[int] = []

    def write(n: int) -> None:
        if n == 3:
            raise OSError("disk full")
        done.append(n)

    writer = WriteBehind(depth=1)
    with pytest.raises(OSError, match="disk full"):
        for n in range(10):
            writer.submit(write, n)
        writer.close()
    writer.close()
    assert done == [0, 1, 2]


def test_write_behind_does_not_hide_the_exception_leaving_its_block():
    def write(n: int) -> None:
        raise OSError("disk full")

    with pytest.raises(KeyboardInterrupt), WriteBehind() as writer:
        writer.submit(write, 1)
        raise KeyboardInterrupt


def test_leaving_the_write_behind_block_by_an_exception_drops_the_queued_calls():
    done: list[int] = []
    started = threading.Event()

    def write(n: int) -> None:
        started.set()
        time.sleep(0.2)
        done.append(n)

    with pytest.raises(KeyboardInterrupt), WriteBehind(depth=4) as writer:
        for n in range(4):
            writer.submit(write, n)
        started.wait()
        raise KeyboardInterrupt
    assert done == [0]  # the call in hand finished, the three queued were dropped


def test_an_interrupt_while_closing_lets_the_call_in_hand_finish_and_drops_the_rest():
    """The signal can land while the main thread waits in close(): leaving then would let the process end
    with the (daemon) worker mid-write."""
    done: list[int] = []
    started = threading.Event()

    def write(n: int) -> None:
        started.set()
        time.sleep(0.3)
        done.append(n)

    writer = WriteBehind(depth=4)
    for n in range(4):
        writer.submit(write, n)
    started.wait()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C or recon-run's SIGTERM handler does, in the main thread

    previous = signal.signal(signal.SIGUSR1, stop)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))  # a real signal wakes the wait
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.close()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert done == [0] and not writer._thread.is_alive()  # finished, not abandoned; 1..3 dropped
