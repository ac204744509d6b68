"""Native TensorRT backend: runs the artifact's plan with `tensorrt` or the lean `tensorrt_lean` runtime.

Device memory and streams come from cuda-python (`cuda.bindings.runtime`), never from torch. The engine is
shared; each thread gets its own execution context, stream and buffers (contexts are not thread-safe).
Order matters: the CUDA device is checked before TensorRT is touched (without a GPU a TensorRT `Runtime`
can crash the process when freed), and the plan's sha256 is checked on the very bytes that get deserialized.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.backends.base import Backend, BackendError
from recon.runtime.manifest import ArtifactError, Manifest, read_verified

_WHAT_TO_DO = "run the ONNX graph instead (--backend onnxruntime-cuda or cpu), or rebuild the engine here"


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:  # cuda-python < 12.6 spelled it this way
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            if shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists():
                # the missing GPU is the news here, not the missing package
                raise BackendError(
                    "the tensorrt backend needs an NVIDIA GPU, and none is visible here (no nvidia-smi, "
                    "no /dev/nvidiactl, no cuda-python); use --backend cpu on this machine"
                ) from None
            raise BackendError(
                "the tensorrt backend needs cuda-python for device memory; `pip install recon[lean]` "
                "or `recon[gpu]`"
            ) from None
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values); raise on error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        cudart = import_cudart()
        name = cudart.cudaGetErrorName(error)[1]
        raise BackendError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values)


def cuda_device(device_id: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA device; BackendError (one sentence) when there is none."""
    cudart = import_cudart()
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0 or count == 0:
        reason = cudart.cudaGetErrorString(error)[1]
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        raise BackendError(
            f"the tensorrt backend needs an NVIDIA GPU, and none is usable here ({reason}); "
            "use --backend cpu on this machine"
        )
    if not 0 <= device_id < count:
        raise BackendError(f"CUDA device {device_id} does not exist (this machine has {count})")
    props = _check(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\x00"), "compute_capability": (int(props.major), int(props.minor))}


def import_tensorrt() -> tuple[Any, bool]:
    """(module, is_lean): the full `tensorrt` if present, else the lean runtime."""
    for module, lean in (("tensorrt", False), ("tensorrt_lean", True)):
        try:
            return importlib.import_module(module), lean
        except ImportError:
            continue
    raise BackendError(
        "TensorRT is not installed; `pip install recon[lean]` (lean runtime, version-compatible engines) "
        "or `recon[gpu]` (full TensorRT)"
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split(".")[:3] if part.isdigit())


def check_engine_compatible(
    info: dict[str, Any], runtime_version: str, lean: bool, compute_capability: tuple[int, int]
) -> None:
    """Refuse an engine this TensorRT or this GPU cannot run, with one sentence saying what to do."""
    built = _version(info.get("version", ""))
    have = _version(runtime_version)
    version_compatible = bool(info.get("version_compatible", False))
    shown = ".".join(map(str, built))
    if not built:  # an empty tuple would pass the equality test below
        raise ArtifactError(
            f"the manifest does not say which TensorRT version built the engine (got "
            f"{info.get('version')!r}); rebuild it with recon-export --engine trt, or {_WHAT_TO_DO}"
        )
    if version_compatible:
        if built[:1] != have[:1] or have < built:
            raise ArtifactError(
                f"the engine was built with TensorRT {shown} (version-compatible), which TensorRT "
                f"{runtime_version} cannot run (needs the same major version, {shown} or newer); "
                f"install TensorRT {built[0]}.x ≥ {shown}, or {_WHAT_TO_DO}"
            )
    else:
        if lean:
            raise ArtifactError(
                f"the engine was built with TensorRT {shown} without version compatibility, and the lean "
                "runtime runs only version-compatible engines; re-export with a version-compatible "
                f"engine, install the full tensorrt=={shown}, or {_WHAT_TO_DO}"
            )
        if built != have[: len(built)]:
            raise ArtifactError(
                f"the engine was built with TensorRT {shown} and this is TensorRT {runtime_version}; "
                f"install tensorrt=={shown}, or {_WHAT_TO_DO}"
            )
    wanted = str(info.get("compute_capability", ""))
    try:
        built_cc = tuple(int(p) for p in wanted.split(".")[:2])
    except ValueError:
        raise ArtifactError(f"the manifest's compute capability {wanted!r} is malformed; re-export") from None
    level = str(info.get("hardware_compatibility_level", "none")).lower()
    ok = (
        compute_capability >= (8, 0)
        if level in ("ampere_plus", "ampere-plus")
        else built_cc == compute_capability
    )
    if not ok:
        here = ".".join(map(str, compute_capability))
        raise ArtifactError(
            f"the engine was built for GPUs of compute capability {wanted} and this GPU is {here}; "
            f"rebuild the engine on this GPU (recon-export --engine trt), or {_WHAT_TO_DO}"
        )


@dataclass
class _ThreadState:
    context: Any
    stream: Any
    d_input: int
    d_output: int
    input_capacity: int
    output_capacity: int
    events: list[Any] = field(default_factory=list)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self, directory: str | os.PathLike, manifest: Manifest, precision: str = "auto", device_id: int = 0
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.manifest = manifest
        self.device_id = device_id
        plan = manifest.plan_file()
        if plan is None:
            raise ArtifactError(
                f"artifact {manifest.name!r} has no TensorRT plan; re-export it on a GPU machine with "
                "--engine trt, or choose an ONNX backend (--backend onnxruntime-cuda or cpu)"
            )
        self.file = plan
        self.entry = manifest.files[plan]
        self.precision = self.entry.precision or "fp16"
        if precision not in ("auto", self.precision):
            raise ArtifactError(
                f"artifact {manifest.name!r} holds a {self.precision} TensorRT plan, not {precision}; "
                f"use --precision {self.precision} (or auto) with --backend tensorrt"
            )
        self.device: dict[str, Any] | None = None
        self._states: list[_ThreadState] = []
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._input = manifest.input["name"]
        self._output = manifest.output["name"]

    def check_usable(self) -> None:
        """Everything short of loading: a GPU, TensorRT, and an engine built for both."""
        self.device = cuda_device(self.device_id)  # first: TensorRT must not start without a GPU
        trt, lean = import_tensorrt()
        check_engine_compatible(
            self.entry.tensorrt or {}, trt.__version__, lean, self.device["compute_capability"]
        )

    def activate_impl(self) -> None:
        self.check_usable()
        trt, _ = import_tensorrt()
        cudart = import_cudart()
        _check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        path = self.directory / self.file
        data = read_verified(self.directory, self.manifest, self.file)  # no link, bounded, hashed as read
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        info = self.entry.tensorrt or {}
        if info.get("version_compatible") and not info.get("lean_runtime_excluded"):
            # the plan embeds its own lean runtime (host code); its sha256 was checked just above
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ArtifactError(
                f"{path}: TensorRT could not deserialize the engine; rebuild it on this machine"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if self._input not in names or self._output not in names:
            raise ArtifactError(f"{path}: engine tensors {names} do not match the manifest; re-export")
        self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        # buffers for the profile's max batch up front; symbolic sizes grow them on demand
        self._in_bytes = self._max_bytes(self.manifest.input["shape"], self._in_dtype)
        self._out_bytes = self._max_bytes(self.manifest.output["shape"], self._out_dtype)

    def _max_bytes(self, shape: list[Any], dtype: np.dtype) -> int:
        dims = shape[1:]
        if not all(isinstance(d, int) for d in dims):
            return 0
        return self.manifest.batch["max"] * int(np.prod(dims)) * dtype.itemsize

    def _ensure(self, state: _ThreadState, side: str, nbytes: int) -> None:
        """Grow a thread's device buffer (and re-point the context at it) when a batch needs more."""
        if nbytes <= getattr(state, f"{side}_capacity"):
            return
        cudart = import_cudart()
        old = getattr(state, f"d_{side}")
        if old:
            _check(cudart.cudaFree(old), "cudaFree")
        pointer = int(_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
        setattr(state, f"d_{side}", pointer)
        setattr(state, f"{side}_capacity", nbytes)
        state.context.set_tensor_address(self._input if side == "input" else self._output, pointer)

    def _thread_state(self) -> _ThreadState:
        state = getattr(self._tls, "state", None)
        if state is None:
            cudart = import_cudart()
            _check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice")  # the current device is per thread
            context = self._engine.create_execution_context()
            stream = _check(
                cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate"
            )
            state = _ThreadState(
                context=context,
                stream=stream,
                d_input=0,
                d_output=0,
                input_capacity=0,
                output_capacity=0,
                events=[_check(cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(4)],
            )
            self._ensure(state, "input", self._in_bytes)
            self._ensure(state, "output", self._out_bytes)
            with self._lock:
                self._states.append(state)
            self._tls.state = state
        return state

    def infer_impl(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        cudart = import_cudart()
        state = self._thread_state()
        if batch.dtype != self._in_dtype:
            batch = batch.astype(self._in_dtype)
        if batch.shape[0] > self.manifest.batch["max"]:
            raise ValueError(
                f"batch of {batch.shape[0]} exceeds the engine profile's max {self.manifest.batch['max']}"
            )
        context, stream, events = state.context, state.stream, state.events
        if not context.set_input_shape(self._input, tuple(batch.shape)):
            raise ValueError(
                f"the engine refuses input shape {tuple(batch.shape)} (profile {self.manifest.batch})"
            )
        output = np.empty(tuple(context.get_tensor_shape(self._output)), dtype=self._out_dtype)
        self._ensure(state, "input", batch.nbytes)
        self._ensure(state, "output", output.nbytes)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaEventRecord(events[0], stream), "cudaEventRecord")
        _check(
            cudart.cudaMemcpyAsync(state.d_input, batch.ctypes.data, batch.nbytes, h2d, stream), "H2D copy"
        )
        _check(cudart.cudaEventRecord(events[1], stream), "cudaEventRecord")
        if not context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        _check(cudart.cudaEventRecord(events[2], stream), "cudaEventRecord")
        _check(
            cudart.cudaMemcpyAsync(output.ctypes.data, state.d_output, output.nbytes, d2h, stream), "D2H copy"
        )
        _check(cudart.cudaEventRecord(events[3], stream), "cudaEventRecord")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        for stage, (a, b) in zip(("h2d", "compute", "d2h"), ((0, 1), (1, 2), (2, 3)), strict=True):
            timings[stage] = (
                _check(cudart.cudaEventElapsedTime(events[a], events[b]), "cudaEventElapsedTime") / 1e3
            )
        return output if output.dtype == np.float32 else output.astype(np.float32)

    def deactivate_impl(self) -> None:
        cudart = import_cudart()
        with self._lock:
            states, self._states = self._states, []
        for state in states:
            state.context = None
            for pointer in (state.d_input, state.d_output):
                if pointer:
                    cudart.cudaFree(pointer)
            for event in state.events:
                cudart.cudaEventDestroy(event)
            cudart.cudaStreamDestroy(state.stream)
        self._tls = threading.local()
        # contexts before the engine, the engine before the runtime
        self._engine = None
        self._runtime = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["device"] = self.device
        return info
