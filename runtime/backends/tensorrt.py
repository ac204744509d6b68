"""Native TensorRT backend: runs the artifact's plan with `tensorrt` or the lean `tensorrt_lean` runtime.

Device memory and streams come from cuda-python (`cuda.bindings.runtime`), never from torch. The engine is
shared; a call takes an execution context with its stream and buffers from a pool and gives it back
(contexts are not thread-safe, so one call at a time each; the pool grows to the peak concurrency only).
Order matters: the CUDA device is checked before TensorRT is touched (without a GPU a TensorRT `Runtime`
can crash the process when freed), and the plan's sha256 is checked on the very bytes that get deserialized.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.artifact.gpu_profiles import Profile, choose_profile
from recon.runtime.artifact.manifest import ArtifactError, BatchProfile, Manifest, read_verified
from recon.runtime.backends.base import Backend, BackendError

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


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA kernel driver is loaded (it writes /proc/driver/nvidia/version)."""
    return Path("/proc/driver/nvidia/version").exists()


def no_gpu_message(error_name: str, error_text: str, cuda_major: int | None, driver: bool = True) -> str:
    """The one sentence for a failed cudaGetDeviceCount. cudaErrorInsufficientDriver means either no driver
    at all or one too old for this CUDA: only the second is named a driver problem."""
    if error_name == "cudaErrorInsufficientDriver" and driver:
        # CUDA 13 wheels (cuda-python 13, TensorRT cu13, onnxruntime-gpu >= 1.28) need driver R580+
        wheels = f"CUDA {cuda_major} wheels" if cuda_major else "these CUDA wheels"
        return (
            f"the NVIDIA driver here is too old for {wheels} ({error_text}); update the driver (CUDA 13 "
            "needs R580 or newer) or install recon[gpu-cu12] / recon[lean-cu12], or use --backend cpu"
        )
    return (
        f"the tensorrt backend needs an NVIDIA GPU, and none is usable here ({error_text}); "
        "use --backend cpu on this machine"
    )


def cuda_device(device_id: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA device; BackendError (one sentence) when there is none."""
    cudart = import_cudart()
    error, count = cudart.cudaGetDeviceCount()  # cuda-python 13: an error code, never an exception
    if int(error) != 0 or count == 0:
        name, text = (cudart.cudaGetErrorName(error)[1], cudart.cudaGetErrorString(error)[1])
        name, text = (v.decode() if isinstance(v, bytes) else str(v) for v in (name, text))
        raise BackendError(no_gpu_message(name, text, cuda_python_major(), nvidia_driver_present()))
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


# -- versions, as plain data --------------------------------------------------------------------------------
def version_tuple(text: str) -> tuple[int, ...]:
    """ "10.13.3.9.post1" → (10, 13, 3, 9): the numeric release parts, a packaging suffix dropped."""
    parts = []
    for part in str(text).split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def same_release(built: tuple[int, ...], have: tuple[int, ...]) -> bool:
    """Equal as far as both are spelled: major.minor.patch, and the build number when both give it."""
    if len(built) < 3:  # an old manifest's "11.4": the runtime must at least agree on that much
        return built == have[: len(built)]
    n = min(len(built), len(have))
    return n >= 3 and built[:n] == have[:n]


_TENSORRT_DIST = re.compile(r"^tensorrt(?:_lean|_dispatch)?_cu(\d+)(?:_.*)?$")


def cuda_major_of(distribution_names: Iterable[str]) -> int | None:
    """The CUDA major the installed TensorRT wheels were built for (`tensorrt-cu13`,
    `tensorrt_lean_cu12_libs`); None when none or several are installed."""
    majors = set()
    for name in distribution_names:
        match = _TENSORRT_DIST.match(name.lower().replace("-", "_"))
        if match:
            majors.add(int(match.group(1)))
    return majors.pop() if len(majors) == 1 else None


def installed_tensorrt_cuda_major() -> int | None:
    return cuda_major_of(str(d.metadata.get("Name", "")) for d in metadata.distributions())


def cuda_python_major() -> int | None:
    """Major version of the installed cuda-python (`cuda-bindings` since 12.6, `cuda-python` before)."""
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return version_tuple(metadata.version(dist))[0]
        except (metadata.PackageNotFoundError, IndexError):
            continue
    return None


def check_cuda_majors(tensorrt_cuda: int | None, cuda_python: int | None) -> None:
    """cuda-python 12 beside a cu13 TensorRT passes the device check on a pre-R580 driver, then fails to
    start CUDA inside TensorRT: refuse it up front. cuda-python 13 beside a cu12 TensorRT is fine: cuda-python
    13's device check already needs an R580+ driver, and that driver runs CUDA 12 too."""
    if tensorrt_cuda is not None and cuda_python is not None and cuda_python < tensorrt_cuda:
        raise BackendError(
            f"TensorRT here is built for CUDA {tensorrt_cuda} but cuda-python is {cuda_python}.x; install "
            f"cuda-python {tensorrt_cuda}.x (pip install recon[lean-cu{tensorrt_cuda}] or "
            f"recon[gpu-cu{tensorrt_cuda}])"
        )


def engine_host_code_allowed(info: dict[str, Any]) -> bool:
    """Whether the runtime must allow host code in the plan: for every version-compatible plan, as trtexec and
    Polygraphy (backend/trt/loader.py, EngineFromBytes) do. Set only after the plan's sha256 matched."""
    return bool(info.get("version_compatible", False))


def new_runtime(trt: Any, logger: Any, info: dict[str, Any]) -> Any:
    """A `trt.Runtime` ready for the plan the manifest entry `info` describes: a version-compatible plan
    does not deserialize unless host code is allowed (`Runtime.engine_host_code_allowed`, checked on the
    tensorrt_lean 10.16 bindings). Call it only after the plan's bytes matched their sha256."""
    runtime = trt.Runtime(logger)
    if engine_host_code_allowed(info):
        runtime.engine_host_code_allowed = True
    return runtime


@dataclass(frozen=True)
class Copy:
    """One cudaMemcpyAsync: `kind` is the cudaMemcpyKind member's name (cuda.bindings.runtime)."""

    dst: int
    src: int
    nbytes: int
    kind: str


def copy_plan(
    host_in: int, dev_in: int, in_bytes: int, dev_out: int, host_out: int, out_bytes: int
) -> list[Copy]:
    """The copies around one engine call, as (destination, source) pointers: the batch host → device before,
    the result device → host after. cudaMemcpyAsync(dst, src, count, kind, stream)."""
    return [
        Copy(dev_in, host_in, in_bytes, "cudaMemcpyHostToDevice"),
        Copy(host_out, dev_out, out_bytes, "cudaMemcpyDeviceToHost"),
    ]


def _memcpy(cudart: Any, copy: Copy, stream: Any) -> None:
    kind = getattr(cudart.cudaMemcpyKind, copy.kind)
    _check(cudart.cudaMemcpyAsync(copy.dst, copy.src, copy.nbytes, kind, stream), copy.kind)


def engine_profiles(info: dict[str, Any], batch: BatchProfile) -> list[Profile]:
    """The plan's optimization profiles (the manifest's `profiles`); an engine exported before they were
    derived holds one profile, the manifest's batch range."""
    entries = info.get("profiles")
    if entries:
        return [Profile.from_json(e) for e in entries]
    return [Profile((batch.min, batch.opt, batch.max))]


def lean_package(info: dict[str, Any], version: str) -> str:
    cuda = info.get("cuda_major")
    return f"tensorrt-lean-cu{cuda}=={version}" if cuda else f"tensorrt-lean-cuXX=={version} (XX: your CUDA)"


def check_engine_compatible(
    info: dict[str, Any], runtime_version: str, lean: bool, compute_capability: tuple[int, int]
) -> None:
    """Refuse an engine this TensorRT or this GPU cannot run, with one sentence saying what to do.

    - a version-compatible plan built with EXCLUDE_LEAN_RUNTIME (recon's --lean) carries no lean runtime: it
      runs on a runtime of exactly the builder's release (lean or full), nothing newer;
    - a version-compatible plan with its lean runtime embedded runs on a full runtime of the builder's
      release or later (TensorRT's version-compatibility docs), on a lean runtime of exactly its release;
    - any other plan needs the full runtime of exactly the builder's release.
    """
    built = version_tuple(info.get("version", ""))
    have = version_tuple(runtime_version)
    version_compatible = bool(info.get("version_compatible", False))
    excluded = bool(info.get("lean_runtime_excluded", version_compatible))
    shown = ".".join(map(str, built))
    if not built:  # an empty tuple would pass the equality test below
        raise ArtifactError(
            f"the manifest does not say which TensorRT version built the engine (got "
            f"{info.get('version')!r}); rebuild it with recon-export --engine trt, or {_WHAT_TO_DO}"
        )
    if version_compatible and not same_release(built, have) and (excluded or lean or have < built):
        if excluded or lean:
            why = "no lean runtime in the plan" if excluded else "a lean runtime runs its release only"
            raise ArtifactError(
                f"the engine was built with TensorRT {shown} (version-compatible, {why}), and this is "
                f"TensorRT {runtime_version}; install exactly {lean_package(info, shown)}, or {_WHAT_TO_DO}"
            )
        raise ArtifactError(
            f"the engine was built with TensorRT {shown} (version-compatible), which the older TensorRT "
            f"{runtime_version} cannot run; install TensorRT {shown} or newer, or {_WHAT_TO_DO}"
        )
    if not version_compatible:
        if lean:
            raise ArtifactError(
                f"the engine was built with TensorRT {shown} without version compatibility, and the lean "
                "runtime runs only version-compatible engines; re-export with a version-compatible "
                f"engine, install the full tensorrt=={shown}, or {_WHAT_TO_DO}"
            )
        if not same_release(built, have):
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
class _ExecutionState:
    """One execution context with its stream, device buffers and events; used by one call at a time."""

    context: Any
    stream: Any
    d_input: int
    d_output: int
    input_capacity: int
    output_capacity: int
    events: list[Any] = field(default_factory=list)
    profile: int = 0  # the optimization profile this context selected (once, at creation)


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
        # Contexts are pooled, not kept per thread: a state serves one call at a time and goes back to the
        # pool, so their number is bounded by the peak concurrency, not by how many threads ever called.
        self._states: list[_ExecutionState] = []
        self._free: list[_ExecutionState] = []
        self._lock = threading.Lock()
        self._input = manifest.input.name
        self._output = manifest.output.name

    def check_usable(self) -> None:
        """Everything short of loading: a GPU, TensorRT, and an engine built for both."""
        self.device = cuda_device(self.device_id)  # first: TensorRT must not start without a GPU
        check_cuda_majors(installed_tensorrt_cuda_major(), cuda_python_major())
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
        # host code allowed for a version-compatible plan: its bytes were checked against the manifest
        self._runtime = new_runtime(trt, self._logger, self.entry.tensorrt or {})
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ArtifactError(
                f"{path}: TensorRT could not deserialize the engine; rebuild it on this machine"
            )
        self._profiles = engine_profiles(self.entry.tensorrt or {}, self.manifest.batch)
        if int(self._engine.num_optimization_profiles) != len(self._profiles):
            raise ArtifactError(
                f"{path}: the engine holds {self._engine.num_optimization_profiles} optimization profiles, "
                f"the manifest lists {len(self._profiles)}; re-export"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if self._input not in names or self._output not in names:
            raise ArtifactError(f"{path}: engine tensors {names} do not match the manifest; re-export")
        dtypes = [self._engine.get_tensor_dtype(n) for n in (self._input, self._output)]
        if any("BF16" in str(d).upper() for d in dtypes):  # numpy has no bfloat16: trt.nptype cannot map it
            raise ArtifactError(f"{path}: the engine's I/O is bfloat16 ({dtypes}); re-export with FP32 I/O")
        self._in_dtype, self._out_dtype = (np.dtype(trt.nptype(d)) for d in dtypes)
        # buffers for the profile's max batch up front; symbolic sizes grow them on demand
        self._in_bytes = self._max_bytes(self.manifest.input.shape, self._in_dtype)
        self._out_bytes = self._max_bytes(self.manifest.output.shape, self._out_dtype)

    def _max_bytes(self, shape: list[Any], dtype: np.dtype) -> int:
        dims = shape[1:]
        if not all(isinstance(d, int) for d in dims):
            return 0
        return self.manifest.batch.max * int(np.prod(dims)) * dtype.itemsize

    def _ensure(self, state: _ExecutionState, side: str, nbytes: int) -> None:
        """Grow a state's device buffer (and re-point its context at it) when a batch needs more."""
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

    def _acquire(self, profile: int) -> _ExecutionState:
        cudart = import_cudart()
        _check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice")  # the current device is per thread
        with self._lock:
            for index, free in enumerate(self._free):
                if free.profile == profile:
                    return self._free.pop(index)
        context = self._engine.create_execution_context()
        stream = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate")
        # a context runs one profile; an engine with several starts each context on profile 0
        if profile and not context.set_optimization_profile_async(profile, int(stream)):
            raise BackendError(f"TensorRT refused optimization profile {profile}; re-export the engine")
        state = _ExecutionState(
            context=context,
            stream=stream,
            d_input=0,
            d_output=0,
            input_capacity=0,
            output_capacity=0,
            events=[_check(cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(4)],
            profile=profile,
        )
        with self._lock:
            self._states.append(state)
        self._ensure(state, "input", self._in_bytes)
        self._ensure(state, "output", self._out_bytes)
        return state

    def _release(self, state: _ExecutionState) -> None:
        with self._lock:
            self._free.append(state)

    def infer_impl(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        if batch.dtype != self._in_dtype:
            batch = batch.astype(self._in_dtype)
        height, width = batch.shape[-2:]
        profile, largest = choose_profile(self._profiles, batch.shape[0], height, width)
        # a batch no profile takes at this size (the profiles keep every tensor < 2^31 elements and the
        # activations in budget) runs in parts; each part's timings add up
        parts = []
        for start in range(0, batch.shape[0], largest):
            part_timings: dict[str, float] = {}
            state = self._acquire(profile)
            try:
                parts.append(self._run(state, batch[start : start + largest], part_timings))
            finally:
                self._release(state)
            for stage, seconds in part_timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run(self, state: _ExecutionState, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        cudart = import_cudart()
        context, stream, events = state.context, state.stream, state.events
        if not context.set_input_shape(self._input, tuple(batch.shape)):
            raise ValueError(
                f"the engine refuses input shape {tuple(batch.shape)} (profile {self.manifest.batch})"
            )
        output = np.empty(tuple(context.get_tensor_shape(self._output)), dtype=self._out_dtype)
        self._ensure(state, "input", batch.nbytes)
        self._ensure(state, "output", output.nbytes)
        batch = np.ascontiguousarray(batch)
        upload, download = copy_plan(
            batch.ctypes.data, state.d_input, batch.nbytes, state.d_output, output.ctypes.data, output.nbytes
        )
        _check(cudart.cudaEventRecord(events[0], stream), "cudaEventRecord")
        _memcpy(cudart, upload, stream)
        _check(cudart.cudaEventRecord(events[1], stream), "cudaEventRecord")
        if not context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        _check(cudart.cudaEventRecord(events[2], stream), "cudaEventRecord")
        _memcpy(cudart, download, stream)
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
            states, self._states, self._free = self._states, [], []
        for state in states:
            state.context = None
            for pointer in (state.d_input, state.d_output):
                if pointer:
                    cudart.cudaFree(pointer)
            for event in state.events:
                cudart.cudaEventDestroy(event)
            cudart.cudaStreamDestroy(state.stream)
        # contexts before the engine, the engine before the runtime
        self._engine = None
        self._runtime = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["device"] = self.device
        info["execution_contexts"] = len(self._states)
        return info
