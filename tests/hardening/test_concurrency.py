"""One Reconstructor, 8 threads x 200 calls with different inputs: outputs bit-identical to serial runs.

ONNX Runtime: one InferenceSession shared by all threads. OpenVINO: one CompiledModel, an infer request per
concurrent caller (drawn from a pool). TensorRT: one engine, one execution context
per thread (GPU only; skipped here with the reason when there is none). Inputs vary in batch size
(including batches above the profile's max, which are split), rank and dtype, so that threads are in
different code paths at the same time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hardening_artifacts import export_cnn

from recon.runtime import Reconstructor

THREADS, CALLS = 8, 200


def make_input(thread: int, call: int, hw: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(thread * 100_003 + call)
    batch = int(rng.integers(1, 13))  # the profiles here stop at 8: some batches are split
    images = rng.random((batch, 1, *hw))
    form = call % 4
    if form == 0:
        return images.astype(np.float32)
    if form == 1:
        return (images[:, 0] * 65535).astype(np.uint16)  # (B, H, W) integers
    if form == 2:
        return images[0, 0]  # (H, W) float64
    return np.asfortranarray(images.astype(np.float32))


def digest(output: np.ndarray) -> tuple[tuple[int, ...], str]:
    return output.shape, hashlib.sha256(np.ascontiguousarray(output).tobytes()).hexdigest()


def check_threads_match_serial(reconstructor: Reconstructor) -> None:
    hw = tuple(d or 64 for d in reconstructor.input_hw)
    serial = {
        (t, c): digest(reconstructor.run(make_input(t, c, hw))) for t in range(THREADS) for c in range(CALLS)
    }
    mismatches: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    timings_seen: list[bool] = []
    start = threading.Barrier(THREADS)

    def work(thread: int) -> None:
        try:
            start.wait()
            for call in range(CALLS):
                if digest(reconstructor.run(make_input(thread, call, hw))) != serial[thread, call]:
                    mismatches.append((thread, call))
            timings_seen.append("total" in reconstructor.last_timings)  # per thread
        except BaseException as error:  # noqa: BLE001 - reported below, with the thread's traceback
            errors.append(error)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert not errors, errors[0]
    assert not any(worker.is_alive() for worker in workers), "a thread hung"
    assert not mismatches, (
        f"{len(mismatches)} of {THREADS * CALLS} outputs differ from serial: {mismatches[:5]}"
    )
    assert timings_seen == [True] * THREADS


@pytest.mark.parametrize("intra_op_threads", [1, None])  # None: the engine's default, one per core
def test_eight_threads_sharing_one_cpu_backend_match_serial_bit_for_bit(
    hardening_artifacts, intra_op_threads, cpu_backend
):
    artifact = hardening_artifacts["conv"]
    with Reconstructor.from_artifact(
        artifact, backend=cpu_backend, threads=intra_op_threads
    ) as reconstructor:
        check_threads_match_serial(reconstructor)


@pytest.mark.slow
def test_eight_threads_on_an_exported_cnn_match_serial_bit_for_bit(exported_cnn, cpu_backend):
    with Reconstructor.from_artifact(exported_cnn, backend=cpu_backend) as reconstructor:
        check_threads_match_serial(reconstructor)


def _tensorrt_here() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    if subprocess.run(
        [sys.executable, "-c", "import tensorrt; tensorrt.Builder"], capture_output=True
    ).returncode:
        return "the full TensorRT package (builder) is not installed"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_tensorrt_here() is not None, reason=_tensorrt_here() or "")
def test_eight_threads_on_one_tensorrt_engine_match_serial_bit_for_bit(tmp_path: Path):
    """Each thread gets its own execution context and stream; the engine is shared."""
    target = export_cnn(tmp_path / "cnn-deblur", engine="trt")
    with Reconstructor.from_artifact(target, backend="tensorrt") as reconstructor:
        check_threads_match_serial(reconstructor)


def test_close_while_other_threads_run_waits_for_them_and_later_runs_say_closed(hardening_artifacts):
    """close() from one thread while four others run: each run returns a whole result or raises the one
    documented RuntimeError ("closed"), never the backend's "call activate()"; close() returns only when
    no run is in flight."""
    reconstructor = Reconstructor.from_artifact(hardening_artifacts["conv"], backend="cpu", threads=1)
    hw = tuple(d or 64 for d in reconstructor.input_hw)
    expected = reconstructor.run(np.zeros((4, 1, *hw), np.float32))
    results: dict[str, int] = {"whole": 0, "closed": 0}
    others: list[BaseException] = []
    running = threading.Barrier(5)

    def work() -> None:
        running.wait()
        while True:
            try:
                output = reconstructor.run(np.zeros((4, 1, *hw), np.float32))
            except RuntimeError as error:
                if "closed" in str(error):
                    results["closed"] += 1
                    return
                others.append(error)
                return
            except BaseException as error:
                others.append(error)
                return
            if not np.array_equal(output, expected):
                others.append(AssertionError("a run returned a damaged result"))
            results["whole"] += 1

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    running.wait()
    reconstructor.close()
    assert reconstructor._in_flight == 0 and not reconstructor.backend.is_active
    for worker in workers:
        worker.join(60)
    assert not others, others
    assert results["closed"] == 4
    with pytest.raises(RuntimeError, match="this Reconstructor is closed"):
        reconstructor.run(np.zeros(hw, np.float32))
    reconstructor.close()  # idempotent
