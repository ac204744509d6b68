"""The TensorRT backend's data path, with TensorRT and CUDA replaced by fakes (no GPU on CI machines).

"Device memory" is host memory here and copies are memmoves, so the backend's real sequence of calls
(set_input_shape, set_tensor_address, execute_async_v3, copies on its stream, events) moves real data.
"""

from __future__ import annotations

import ctypes
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from runtime_artifacts import MAX_BATCH, H, W, build_artifact

from recon.runtime import ArtifactError, Reconstructor
from recon.runtime.backends import tensorrt as trt_backend
from recon.runtime.manifest import load_manifest

PLAN = {"version": "11.4.0", "compute_capability": "9.0", "version_compatible": False}
PLAN_BYTES = b"not a real engine"  # what runtime_artifacts writes as model.plan


class FakeCudart:
    cudaStreamNonBlocking = 1
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.freed: list[int] = []

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaGetDeviceProperties(self, device):
        return 0, SimpleNamespace(name=b"Fake GPU\x00", major=9, minor=0)

    def cudaSetDevice(self, device):
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):
        return 0, 7

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaMalloc(self, size):
        buffer = np.zeros(size, np.uint8)
        self.buffers[buffer.ctypes.data] = buffer
        return 0, buffer.ctypes.data

    def cudaFree(self, pointer):
        self.freed.append(pointer)
        return (0,)

    def cudaEventCreate(self):
        return 0, object()

    def cudaEventDestroy(self, event):
        return (0,)

    def cudaEventRecord(self, event, stream):
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return 0, 0.25

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        ctypes.memmove(dst, src, count)
        return (0,)


class FakeContext:
    def __init__(self, engine) -> None:
        self.engine, self.shape, self.addresses = engine, None, {}

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return name == "measurement" and 1 <= shape[0] <= MAX_BATCH

    def get_tensor_shape(self, name):
        return self.shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        n = int(np.prod(self.shape))
        source = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["measurement"]))
        target = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["image"]))
        target[:] = 2 * source  # the "engine": doubles its input
        self.engine.threads.add(threading.get_ident())
        return True


class FakeEngine:
    num_io_tensors = 2

    def __init__(self) -> None:
        self.contexts, self.threads = 0, set()

    def get_tensor_name(self, index):
        return ("measurement", "image")[index]

    def get_tensor_dtype(self, name):
        return "float32"

    def create_execution_context(self):
        self.contexts += 1
        return FakeContext(self)


class FakeTensorRT:
    __version__ = "11.4.0.106"
    engines: list[FakeEngine] = []

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    class Runtime:
        def __init__(self, logger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            if data != PLAN_BYTES:
                return None
            FakeTensorRT.engines.append(FakeEngine())
            return FakeTensorRT.engines[-1]

    @staticmethod
    def nptype(dtype):
        return np.float32


@pytest.fixture
def fakes(monkeypatch):
    cudart = FakeCudart()
    FakeTensorRT.engines = []
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: (FakeTensorRT, False))
    return cudart


@pytest.fixture
def plan_artifact(tmp_path):
    return build_artifact(tmp_path / "a", plan=PLAN, value_range=[0.0, 10.0])


def test_the_plan_runs_with_copies_and_stage_timings(fakes, plan_artifact):
    x = np.random.default_rng(0).random((2 * MAX_BATCH + 3, 1, H, W), dtype=np.float32)
    with Reconstructor.from_artifact(plan_artifact) as rec:  # auto picks the usable plan
        assert rec.backend_name == "tensorrt" and "Fake GPU" in rec.backend_reason
        np.testing.assert_allclose(rec.run(x), 2 * x)
        assert {"prepare", "h2d", "compute", "d2h", "finish"} <= set(rec.last_timings)
        assert rec.last_timings["compute"] == pytest.approx(3 * 0.25e-3)  # three chunks, 0.25 ms each
    assert len(fakes.freed) == 2  # input and output buffers of the one thread that ran


def test_each_thread_gets_its_own_execution_context(fakes, plan_artifact):
    with Reconstructor.from_artifact(plan_artifact, backend="tensorrt") as rec:
        x = np.ones((3, H, W), np.float32)
        together = threading.Barrier(3)  # alive at once, so no thread id is reused

        def work() -> None:
            rec.run(x)
            together.wait()

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rec.run(x)
        engine = FakeTensorRT.engines[-1]
        assert engine.contexts == 4 and len(engine.threads) == 4
    assert len(fakes.freed) == 8


def test_a_plan_changed_after_the_manifest_was_read_is_not_deserialized(fakes, plan_artifact):
    manifest = load_manifest(plan_artifact)
    (plan_artifact / "model.plan").write_bytes(b"an engine from elsewhere")
    backend = trt_backend.TensorRTBackend(plan_artifact, manifest)
    with pytest.raises(ArtifactError, match="sha256 does not match the manifest; refusing to load it"):
        backend.activate()
    assert not FakeTensorRT.engines


def test_an_engine_for_another_gpu_is_refused_and_auto_falls_back_saying_why(fakes, tmp_path):
    artifact = build_artifact(tmp_path / "a", plan={**PLAN, "compute_capability": "8.6"})
    with pytest.raises(ArtifactError, match="compute capability 8.6 and this GPU is 9.0"):
        Reconstructor.from_artifact(artifact, backend="tensorrt")
    with Reconstructor.from_artifact(artifact) as rec:
        assert rec.backend_name == "onnxruntime-cpu"
        assert "compute capability 8.6" in rec.backend_reason


def test_a_precision_the_plan_does_not_have_is_refused(fakes, plan_artifact):
    with pytest.raises(ArtifactError, match="holds a fp16 TensorRT plan, not int8"):
        Reconstructor.from_artifact(plan_artifact, backend="tensorrt", precision="int8")
