"""OpenVINO on the CPU: the artifact's own ONNX files (FP32, INT8 QDQ), and bf16 where the CPU has it.

- The bytes checked are the bytes compiled: `read_verified` reads the file once (size, sha256, no link, no
  external data) and they go to `Core.read_model(bytes)` (OpenVINO 2026.4's overload 1: "Bytes with model in
  IR / ONNX ..."). External data matters here too: OpenVINO, handed bytes, reads an external tensor's
  location relative to the working directory (checked: a Conv with its weights in w.bin loads and runs).
- Precision is set, never left to the device default: OpenVINO's CPU plugin defaults
  INFERENCE_PRECISION_HINT to bf16 on CPUs with native bf16 (checked: `Core().get_property("CPU",
  "INFERENCE_PRECISION_HINT")` is bfloat16 on this Xeon with AMX), so an FP32 artifact would silently run in
  bf16. "fp32" and "int8" (the float layers between the QDQ pairs) run with f32; "bf16" runs the FP32 graph
  with bf16 and is refused where the CPU has no native bf16 (on AVX2 the hint silently runs FP32). Under
  bf16 the operations before the network (CT: the in-graph FBP) stay f32: openvino_precise.py.
- Static shapes: OpenVINO's CPU plugin runs a graph compiled for one whole input shape markedly faster than
  one with a dynamic batch or dynamic H×W (shipped ResUNet 256², 2 threads, interleaved, static ÷ dynamic
  H×W at a fixed batch: FP32 0.92-0.93, bf16 0.74-0.85, INT8 0.66-0.69; compiling costs 0.2-0.7 s;
  docs/benchmarks.md, "Static shapes"). So each (batch, H, W) met with a batch of 1, the profile's opt or
  its max (the chunks big batches are split into) gets a CompiledModel of its own, compiled on first use,
  up to MAX_STATIC_SHAPES of them; other batch sizes, and new shapes once that many exist, run on the
  dynamic one. Compiled models are never evicted, so which model runs depends on the input shape alone
  and a given shape gives the same bits on every call (the INT8 graph's static and dynamic compilations
  differ by ~1e-2).
- Each CompiledModel is thread-safe; an InferRequest is not: each concurrent caller takes one from a pool of
  idle requests, so memory follows the number of threads that ran at the same time.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from recon.runtime.artifact.manifest import ArtifactError, Manifest, read_verified
from recon.runtime.backends.base import Backend, BackendError
from recon.runtime.backends.openvino_precise import keep_physics_in_f32

# runtime precision → (artifact file precision, OpenVINO inference precision hint)
PRECISIONS = {
    "fp32": ("fp32", "f32"),
    "bf16": ("fp32", "bf16"),
    "int8": ("int8", "f32"),
    "fp16": ("fp16", "f32"),
}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 dot products (Cooper Lake+, Sapphire Rapids+)
# static compilations kept per backend: bounds memory and compile time for hosts that feed many image sizes
MAX_STATIC_SHAPES = 8


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BackendError(
            "OpenVINO is not installed; install it with `pip install recon[openvino]` or choose --backend cpu"
        ) from None
    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except BackendError:
        return False
    return True


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux), or None where /proc/cpuinfo does not exist."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    return flags_in_cpuinfo(text)


def flags_in_cpuinfo(text: str) -> set[str]:
    """The first "flags" line of /proc/cpuinfo's text (every core lists the same)."""
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_refusal(capabilities: Iterable[str], flags: set[str] | None) -> str | None:
    """Why bf16 cannot run here, or None when it can.

    Both must agree: OpenVINO's CPU plugin lists "BF16" in OPTIMIZATION_CAPABILITIES, and the CPU flags
    (when the OS shows them) include a native bf16 instruction set. Without them the bf16 hint either is
    ignored (AVX2: silently FP32) or emulated, neither of which is what "bf16" promises.
    """
    capabilities = set(capabilities)
    if "BF16" not in capabilities:
        return (
            f"OpenVINO lists no BF16 for this CPU (its capabilities: {', '.join(sorted(capabilities))}); "
            "bf16 needs a CPU with AVX512_BF16 or AMX, use precision fp32 or int8"
        )
    if flags is not None and not any(flag in flags for flag in BF16_CPU_FLAGS):
        return (
            f"this CPU has no native bf16 ({' or '.join(BF16_CPU_FLAGS)} missing from its flags); "
            "use precision fp32 or int8"
        )
    return None


def bf16_refusal_here(core: Any = None) -> str | None:
    """`bf16_refusal` for this machine: OpenVINO's capabilities for its CPU and /proc/cpuinfo's flags."""
    core = import_openvino().Core() if core is None else core
    return bf16_refusal(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"), cpu_flags())


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _port(port: Any) -> SimpleNamespace:
    """An OpenVINO model input/output in the shape `check_graph_io` reads (onnxruntime's NodeArg fields)."""
    element = port.get_element_type().get_type_name()  # "f32", "f16", "u8", ...
    shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
    return SimpleNamespace(
        name=port.get_any_name(), type="tensor(float)" if element == "f32" else element, shape=shape
    )


Entry = tuple[Any, "queue.SimpleQueue[Any]"]  # a CompiledModel and its idle infer requests


class CompiledShapes:
    """One graph's CompiledModels: the dynamic one (key None) and a static one per key met, compiled on
    first use for the input shapes given, up to MAX_STATIC_SHAPES, never evicted (a key always runs on the
    same graph: same bits). Used by the backend (key: the input shape) and by the consistency check (key:
    both inputs' shapes). Compilation errors are OpenVINO's own; callers word them."""

    def __init__(self, core: Any, model: Any, config: dict[str, Any], dynamic: Any) -> None:
        self.core, self.model, self.config = core, model, config
        self.by_key: dict[Any, Entry] = {None: (dynamic, queue.SimpleQueue())}
        self._lock = threading.Lock()

    def get(self, key: Any, shapes: dict[str, list[int]]) -> Entry:
        found = self.by_key.get(key)
        if found is not None:
            return found
        with self._lock:  # one compilation per key, even when threads arrive together
            found = self.by_key.get(key)
            if found is not None:
                return found
            if len(self.by_key) > MAX_STATIC_SHAPES:  # full: this key runs dynamic, now and later
                return self.by_key[None]
            model = self.model.clone()
            model.reshape({name: import_openvino().PartialShape(shape) for name, shape in shapes.items()})
            found = (self.core.compile_model(model, "CPU", self.config), queue.SimpleQueue())
            self.by_key = {**self.by_key, key: found}  # readers never see a half-built dict
        return found


class borrowed_request:  # noqa: N801 - used as a function: `with borrowed_request(entry) as request`
    """An idle infer request of the entry's CompiledModel (a new one if none is idle), returned after use:
    a CompiledModel is thread-safe, an InferRequest is not, so memory follows the threads that ran at once.
    A class rather than @contextmanager: it runs on every call, and a generator costs more."""

    __slots__ = ("_idle", "_request")

    def __init__(self, entry: Entry) -> None:
        compiled, self._idle = entry
        try:
            self._request = self._idle.get_nowait()
        except queue.Empty:
            self._request = compiled.create_infer_request()

    def __enter__(self) -> Any:
        return self._request

    def __exit__(self, *exc_info: Any) -> None:
        self._idle.put(self._request)


class OpenVinoBackend(Backend):
    """One OpenVINO CompiledModel on the CPU over one ONNX file of the artifact."""

    name = "openvino"

    def __init__(
        self,
        directory: str | os.PathLike,
        manifest: Manifest,
        precision: str = "auto",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        precision = "fp32" if precision == "auto" else precision
        if precision not in PRECISIONS:
            raise ValueError(
                f"openvino: precision must be auto or one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        if threads is not None and threads < 0:
            raise ValueError(f"threads must be >= 0 (0: one per core), got {threads}")
        file_precision, self.hint = PRECISIONS[precision]
        self.file = manifest.onnx_file(file_precision)
        if self.file is None:
            have = sorted(e.precision or "?" for e in manifest.files.values() if e.kind == "onnx")
            raise ArtifactError(
                f"artifact {manifest.name!r} has no {file_precision} ONNX file (it has: "
                f"{', '.join(have) or 'none'}); choose one of those precisions or re-export with it"
            )
        self.precision = precision
        self.directory = Path(directory)
        self.manifest = manifest
        self.onnx_path = self.directory / self.file
        self.threads = threads
        self.compiled: Any = None  # the dynamic-batch CompiledModel
        batch = manifest.batch
        lo, hi = batch.min, batch.max
        self.static_batches = sorted(b for b in {1, batch.opt, hi} if lo <= b <= hi)
        self._shapes: CompiledShapes | None = None  # keyed by input shape (batch, 1, H, W)
        self._input_name = manifest.input.name
        self._output_name = manifest.output.name
        self._output_index = 0  # the manifest's output among the graph's outputs (set on activation)
        self.kept_f32 = 0  # bf16: operations kept float32 (openvino_precise.py)

    def config(self) -> dict[str, Any]:
        """The compile properties (also used by bench/runtime.py to call OpenVINO directly alike)."""
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.hint,
            "PERFORMANCE_HINT": "LATENCY",
            # one stream: every request runs on the same threads, so outputs do not depend on which
            # stream (and how many threads) a call landed on
            "NUM_STREAMS": "1",
        }
        if self.threads:  # None or 0: OpenVINO's default, one per core
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        return config

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        from recon.runtime.backends.onnxruntime import check_graph_io

        ov = import_openvino()
        core = ov.Core()
        if self.hint == "bf16":
            why = bf16_refusal_here(core)
            if why is not None:
                raise BackendError(f"openvino: precision bf16 refused: {why}")
        # the bytes checked are the bytes compiled (size, sha256, no link, no external data); never the path
        model_bytes = read_verified(self.directory, self.manifest, self.file)
        try:
            model = core.read_model(model_bytes)
            inputs, outputs = [_port(p) for p in model.inputs], [_port(p) for p in model.outputs]
        except Exception as error:  # OpenVINO raises RuntimeError/GeneralFailure with its own text
            raise ArtifactError(
                f"{self.onnx_path}: OpenVINO cannot read it ({_first_line(error)}); re-export"
            ) from None
        names = [p.name for p in outputs]
        if [p.name for p in inputs] != [self._input_name] or self._output_name not in names:
            raise ArtifactError(
                f"{self.onnx_path}: graph inputs {[p.name for p in inputs]} / outputs {names} do not match "
                f"the manifest's {self._input_name!r} → {self._output_name!r}; re-export the artifact"
            )
        self._output_index = names.index(self._output_name)
        check_graph_io(self.onnx_path, self.manifest, inputs[0], outputs[self._output_index])
        if self.hint == "bf16":  # the physics before the network (CT: the FBP) stays float32
            try:
                model, self.kept_f32 = keep_physics_in_f32(core, model)
            except Exception as error:  # OpenVINO's serializer/reader, or no room for the temporary IR
                raise BackendError(
                    f"openvino: bf16 needs the operations before the network kept float32, which failed "
                    f"({_first_line(error)}); use precision fp32 or int8"
                ) from None
        try:
            self.compiled = core.compile_model(model, "CPU", self.config())
        except Exception as error:
            raise ArtifactError(
                f"{self.onnx_path}: OpenVINO cannot compile it for the CPU ({_first_line(error)}); re-export"
            ) from None
        self._shapes = CompiledShapes(core, model, self.config(), self.compiled)

    @property
    def _by_shape(self) -> dict[Any, Entry]:
        """input shape (batch, 1, H, W) -> (CompiledModel, its idle requests); None: the dynamic model."""
        return {} if self._shapes is None else self._shapes.by_key

    def compiled_for(self, shape: tuple[int, ...]) -> Entry:
        """(CompiledModel, its idle requests) for an input shape (batch, 1, H, W): a static one when the
        batch is one of `static_batches` and fewer than MAX_STATIC_SHAPES exist, else the dynamic one."""
        assert self._shapes is not None, "activate() first"
        found = self._shapes.by_key.get(tuple(shape))
        if found is not None:  # compiled before: the per-call path stops here
            return found
        shape = tuple(map(int, shape))
        if shape[0] not in self.static_batches:
            return self._shapes.by_key[None]
        try:
            return self._shapes.get(shape, {self._input_name: list(shape)})
        except Exception as error:
            raise BackendError(
                f"{self.name}: OpenVINO cannot compile the graph for input shape {shape} "
                f"({_first_line(error)})"
            ) from None

    def infer_impl(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        with borrowed_request(self.compiled_for(batch.shape)) as request:
            start = time.perf_counter()
            try:
                # share_inputs: the C-contiguous float32 batch is used in place. share_outputs: the result
                # is a view of the request's output tensor (InferRequest.infer's docstring, OpenVINO
                # 2026.4), copied here while the request is still ours, since it serves the next call; numpy's
                # copy is cheaper than share_outputs=False's (a one-Relu graph, 256², batch 1 / 8: 73 / 435
                # µs per call against 89 / 547 µs). Ports by index: a name is looked up on every call.
                result = request.infer({0: batch}, share_inputs=True, share_outputs=True)
                output = result[self._output_index].copy()
            except Exception as error:
                raise BackendError(
                    f"{self.name}: OpenVINO failed to run the graph ({_first_line(error)})"
                ) from error
        timings["compute"] = time.perf_counter() - start
        return output

    def deactivate_impl(self) -> None:
        self._shapes = None
        self.compiled = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["threads"] = self.threads
        if self.compiled is not None:
            info["inference_precision"] = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
            info["static_batches"] = self.static_batches
            info["static_shapes"] = [list(k) for k in self._by_shape if k is not None]
            if self.hint == "bf16":
                info["kept_f32_operations"] = self.kept_f32
            info["openvino"] = import_openvino().__version__
        return info
