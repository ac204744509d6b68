"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers.

A GPU provider asked for by name never falls back to the CPU in silence: the session's providers are checked
after creation, and so is where each node went (`session.record_ep_graph_assignment_info`): a convolution or
matmul placed on the CPU is refused. `session.disable_cpu_ep_fallback` is NOT set: the CUDA provider itself
hands small shape subgraphs (Shape → Concat → Expand, as in the CT graph) to the CPU
(onnxruntime core/framework/fallback_cpu_capability.cc, GetCpuPreferredNodes), so that option makes session
creation fail on every GPU.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.artifact.manifest import ArtifactError, Manifest, read_verified
from recon.runtime.backends.base import Backend, BackendError
from recon.runtime.backends.onnxruntime_tensorrt import (
    TF32_VARIABLE,
    load_tensorrt_libraries,
    provider_profile,
    provider_profile_options,
    tf32_state,
    trt_cache_paths,
)
from recon.runtime.cache import cache_root

# selection name → the ONNX Runtime providers in priority order
PROVIDERS = {
    "onnxruntime-cpu": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider"],
    # nodes TensorRT cannot take go to CUDA, never to the CPU
    "onnxruntime-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed; install it with `pip install recon[cpu]` "
            "(or `recon[gpu]` for onnxruntime-gpu)"
        ) from None
    return onnxruntime


_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",  # NCHWc layouts: ~2x on CPU convs
}
Providers = list[tuple[str, dict[str, Any]]]


def session_options(
    threads: int | None = None,
    optimization_level: str = "all",
    log_severity_level: int = 3,
    inter_op_threads: int | None = None,
) -> Any:
    """`onnxruntime.SessionOptions` as recon sets them: graph optimization by name, threads, logging."""
    ort = import_onnxruntime()
    if optimization_level not in _OPTIMIZATION_LEVELS:
        raise ValueError(
            f"optimization_level must be one of {sorted(_OPTIMIZATION_LEVELS)}, got {optimization_level!r}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _OPTIMIZATION_LEVELS[optimization_level]
    )
    if threads is not None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: one per core), got {threads}")
        options.intra_op_num_threads = threads
    if inter_op_threads is not None:
        options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = log_severity_level
    # Idle intra-op threads do not spin (onnxruntime's "session.intra_op.allow_spinning", default "1";
    # onnxruntime_session_options_config_keys.h). Spinning threads took the cores from whatever ran next on
    # them: the consistency check after a network run (shipped ResUNet 256², 2 threads: mean 8.2 ms with
    # spinning, outliers of tens of ms; 2.2 ms without; the network's own median unchanged, 53.5 vs
    # 54.3 ms), another session's run, the host's own work between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def new_session(
    model: str | os.PathLike | bytes, options: Any = None, providers: Providers | None = None
) -> Any:
    """The one place recon builds an `onnxruntime.InferenceSession` (backend, parity, INT8 timing, profiling,
    benches): a path or the model's bytes, `session_options()` by default, CPU unless `providers` (name,
    options) pairs say otherwise. Checked against onnxruntime's documented signature
    `InferenceSession(path_or_bytes, sess_options=None, providers=None, provider_options=None)`."""
    ort = import_onnxruntime()
    providers = providers if providers is not None else [("CPUExecutionProvider", {})]
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        sess_options=options if options is not None else session_options(),
        providers=[name for name, _ in providers],
        provider_options=[provider_options for _, provider_options in providers],
    )


def available_providers() -> list[str]:
    try:
        return list(import_onnxruntime().get_available_providers())
    except BackendError:
        return []


# Ops whose placement on the CPU would matter (the compute, not shape arithmetic): refused for GPU backends.
HEAVY_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "GridSample", "GatherElements", "Resize", "ReduceSum",
     "ReduceMean", "LayerNormalization", "Softmax", "Attention", "MultiHeadAttention", "Einsum", "Pad"}
)  # fmt: skip


def cpu_placed_compute(placement: list[tuple[str, str, str]], wanted: str) -> list[str]:
    """Names of heavy nodes (HEAVY_OPS) that went to the CPU though `wanted` is a GPU provider."""
    if wanted == "CPUExecutionProvider":
        return []
    return [f"{op}:{name}" for ep, op, name in placement if ep == "CPUExecutionProvider" and op in HEAVY_OPS]


def node_placement(session: Any) -> list[tuple[str, str, str]]:
    """(provider, op type, node name) of every node, from onnxruntime's assignment record (ORT >= 1.26);
    empty when this onnxruntime cannot tell."""
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except Exception:  # an older onnxruntime (AttributeError) or a session without the record (ORT's Fail)
        return []
    return [(sg.ep_name, node.op_type, node.name) for sg in subgraphs for node in sg.get_nodes()]


# PyPI distributions that all install the one `onnxruntime` module
ONNXRUNTIME_BUILDS = frozenset(
    {"onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"}
)


def onnxruntime_conflict(distribution_names: Iterable[str]) -> str | None:
    """A sentence when more than one onnxruntime build is installed: they all install the same `onnxruntime`
    module, so the files of one overwrite the other's and the GPU providers may be missing or mixed."""
    builds = sorted({n.lower().replace("_", "-") for n in distribution_names} & ONNXRUNTIME_BUILDS)
    if len(builds) < 2:
        return None
    return (
        f"{' and '.join(builds)} are both installed and share one `onnxruntime` module; uninstall all of "
        "them and install only onnxruntime-gpu (pip install 'recon[gpu-cu13]', docs/gpu.md)"
    )


def cuda_major(version: Any) -> int | None:
    """ "13.0" → 13; None (or no number) → None."""
    text = str(version or "").split(".")[0]
    return int(text) if text.isdigit() else None


def preload_wanted(torch_cuda: str | None, onnxruntime_cuda: str | None) -> bool:
    """Whether to call `onnxruntime.preload_dlls()`: for a CUDA build of onnxruntime, unless torch is loaded
    with CUDA of the same major (then its libraries serve onnxruntime, and a second copy is what onnxruntime's
    docs warn against). A CPU torch, or torch on another CUDA major, leaves onnxruntime without its CUDA."""
    ort_major = cuda_major(onnxruntime_cuda)
    return ort_major is not None and cuda_major(torch_cuda) != ort_major


def preload_cuda_libraries(ort: Any) -> str:
    """Load CUDA/cuDNN from the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) before a GPU session starts.

    `onnxruntime.preload_dlls()` (onnxruntime/__init__.py) is what onnxruntime's docs ask for when CUDA comes
    from pip; `preload_wanted` says when. Returns what it printed (it reports failures on stdout), so that a
    failure can be shown in the error it leads to.
    """
    if not hasattr(ort, "preload_dlls"):
        return ""
    try:
        from onnxruntime.capi import build_and_package_info as build
    except ImportError:
        return ""
    torch = sys.modules.get("torch")
    torch_cuda = getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None
    if not preload_wanted(torch_cuda, getattr(build, "cuda_version", None)):
        return ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(Exception):
        ort.preload_dlls()
    return printed.getvalue().strip()


def choose_onnx_file(manifest: Manifest, precision: str, gpu: bool) -> tuple[str, str]:
    """The artifact file for a precision: "auto" is FP32 on the CPU, FP16 (else FP32) on a GPU."""
    order = (["fp16", "fp32"] if gpu else ["fp32"]) if precision == "auto" else [precision]
    for candidate in order:
        name = manifest.onnx_file(candidate)
        if name is not None:
            return name, candidate
    have = sorted(e.precision or "?" for e in manifest.files.values() if e.kind == "onnx")
    wanted = " or ".join(order)
    raise ArtifactError(
        f"artifact {manifest.name!r} has no {wanted} ONNX file (it has: {', '.join(have) or 'none'}); "
        f"choose one of those precisions or re-export with the {wanted} graph"
    )


def check_graph_io(path: Path, manifest: Manifest, graph_input: Any, graph_output: Any) -> None:
    """Refuse, at load time, a graph whose I/O types or static dims contradict the manifest.

    Otherwise a manifest edited by hand (or an export bug) shows up later as an onnxruntime error on
    the first exam, or as outputs of another shape than the one promised.
    """
    sides = (("input", graph_input, manifest.input), ("output", graph_output, manifest.output))
    for side, node, spec in sides:
        if node.type != "tensor(float)":
            raise ArtifactError(
                f"{path}: graph {side} {node.name!r} is {node.type}, the runtime passes float32 "
                "(tensor(float)); re-export with FP32 inputs and outputs"
            )
        graph_shape, wanted = list(node.shape), list(spec.shape)
        bad = len(graph_shape) != len(wanted)
        for axis, (have, want) in enumerate(zip(graph_shape, wanted, strict=False)):
            static_have, static_want = isinstance(have, int), isinstance(want, int)
            if axis == 0:  # the batch axis: a static graph batch must be the whole profile
                bad |= static_have and not (manifest.batch.min == have == manifest.batch.max)
            elif static_have and static_want:
                bad |= have != want
            elif side == "input":  # the manifest would let through sizes the graph refuses
                bad |= static_have
        if bad:
            raise ArtifactError(
                f"{path}: graph {side} {node.name!r} has shape {graph_shape}, the manifest says "
                f"{wanted} (batch {manifest.batch}); the manifest does not describe this graph, re-export"
            )


class OnnxRuntimeBackend(Backend):
    """One `onnxruntime.InferenceSession` (thread-safe for `run`) over one ONNX file of the artifact."""

    def __init__(
        self,
        directory: str | os.PathLike,
        manifest: Manifest,
        name: str = "onnxruntime-cpu",
        precision: str = "auto",
        threads: int | None = None,
        device_id: int = 0,
        provider_options: dict[str, Any] | None = None,
        optimization_level: str = "all",
        trt_cache_dir: str | os.PathLike | None = None,
        log_severity_level: int = 4,  # fatal only: errors reach the caller as one exception, not log lines
    ) -> None:
        super().__init__()
        if name not in PROVIDERS:
            raise ValueError(f"unknown ONNX Runtime backend {name!r}; expected one of {sorted(PROVIDERS)}")
        self.name = name
        self.directory = Path(directory)
        self.manifest = manifest
        self.gpu = name != "onnxruntime-cpu"
        if precision == "bf16":
            raise BackendError(
                f"backend {name!r} has no bf16 path; bf16 runs on --backend openvino (`pip install "
                "recon[openvino]`) where the CPU has AVX512_BF16 or AMX"
            )
        self.file, self.precision = choose_onnx_file(manifest, precision, self.gpu)
        # onnxruntime's TensorRT provider builds weakly typed networks (no strong-typing option, 1.31): an
        # FP16 graph's casts would be hints only. It gets the FP32 graph with trt_fp16_enable instead.
        self.trt_fp16 = name == "onnxruntime-tensorrt" and self.precision == "fp16"
        if self.trt_fp16:
            fp32 = manifest.onnx_file("fp32")
            if fp32 is None:
                raise ArtifactError(
                    f"artifact {manifest.name!r} has no FP32 ONNX graph, which the TensorRT provider builds "
                    "its FP16 engine from; re-export the artifact"
                )
            self.file = fp32
        self.onnx_path = self.directory / self.file
        self.threads = threads
        self.device_id = device_id
        self.extra_provider_options = dict(provider_options or {})
        self.optimization_level = optimization_level
        self.trt_cache_dir = trt_cache_dir
        self.log_severity_level = log_severity_level
        self.session: Any = None
        self._batch_limit: int | None = None  # the TensorRT provider's largest batch; larger ones are split
        self.placement: list[tuple[str, str, str]] = []
        self._input_name = manifest.input.name
        self._output_name = manifest.output.name

    # -- configuration (also used by recon-bench to build a bare session with the same options) --------
    def session_options(self) -> Any:
        options = session_options(self.threads, self.optimization_level, self.log_severity_level)
        if self.gpu:  # where each node went, checked after creation (cpu_placed_compute)
            options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        return options

    def providers(self) -> list[tuple[str, dict[str, Any]]]:
        """(provider, options) in priority order, every option spelled out."""
        result: list[tuple[str, dict[str, Any]]] = []
        for provider in PROVIDERS[self.name]:
            if provider == "CPUExecutionProvider":
                options: dict[str, Any] = {}
            elif provider == "CUDAExecutionProvider":
                options = {
                    "device_id": str(self.device_id),
                    "arena_extend_strategy": "kSameAsRequested",
                    # EXHAUSTIVE picks the fastest conv per shape; warm every batch size up once
                    "cudnn_conv_algo_search": "EXHAUSTIVE",
                    # TF32 would cost FP32 graphs ~1e-3 parity against the CPU, and the FP32 islands their
                    # point (cuda_execution_provider_info.cc: use_tf32 defaults to on)
                    "use_tf32": "0",
                    "do_copy_in_default_stream": "1",
                }
            else:  # TensorrtExecutionProvider (option names: tensorrt_execution_provider_info.cc)
                # No TF32 switch exists here: NVIDIA_TF32_OVERRIDE=0 (tf32_state, set in activate_impl)
                root = Path(self.trt_cache_dir or cache_root() / "ort-trt")
                sha = self.manifest.files[self.file].sha256
                tf32, _ = tf32_state(os.environ)
                engines, timing = trt_cache_paths(root, self.manifest.name, sha, self.trt_fp16, tf32)
                options = {
                    "device_id": str(self.device_id),
                    # the FP32 graph, built FP16 where TensorRT finds it faster (weak typing)
                    "trt_fp16_enable": str(self.trt_fp16),
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(engines),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(timing),
                    **provider_profile_options(self.manifest, self.file, self._input_name),
                }
            if provider == PROVIDERS[self.name][0]:
                options.update({k: str(v) for k, v in self.extra_provider_options.items()})
            result.append((provider, options))
        return result

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        ort = import_onnxruntime()
        wanted = [provider for provider, _ in self.providers()]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        tensorrt_note = ""
        if self.name == "onnxruntime-tensorrt":
            tensorrt_note = load_tensorrt_libraries()  # before the session: the provider loads libnvinfer
        why_trt = f"; TensorRT: {tensorrt_note}" if tensorrt_note else ""
        if missing:
            raise BackendError(
                f"backend {self.name!r} needs {', '.join(missing)} but this onnxruntime "
                f"({ort.__version__}) offers only {', '.join(available)}{why_trt}; install onnxruntime-gpu "
                "(`pip install recon[gpu]`) on a machine with an NVIDIA GPU, or choose --backend cpu"
            )
        if self.name == "onnxruntime-tensorrt":
            tf32, to_set = tf32_state(os.environ)
            if tf32 != "off":
                raise BackendError(
                    f"backend {self.name!r}: {TF32_VARIABLE}={os.environ.get(TF32_VARIABLE)!r} leaves TF32 "
                    "on, and TensorRT would run FP32 layers (the FP32 islands) with 10-bit mantissas; unset "
                    "it or set it to 0"
                )
            os.environ.update(to_set)  # read when CUDA's libraries start: before the first GPU session
            profile = provider_profile(self.manifest, self.file)
            self._batch_limit = profile.batch[2] if profile is not None else None
        providers = self.providers()
        if self.name == "onnxruntime-tensorrt":  # the provider does not create its cache folders
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
                Path(providers[0][1][key]).mkdir(parents=True, exist_ok=True)
        if self.gpu:
            conflict = onnxruntime_conflict(str(d.metadata.get("Name", "")) for d in metadata.distributions())
            if conflict:
                raise BackendError(f"backend {self.name!r}: {conflict}")
        preload_note = preload_cuda_libraries(ort) if self.gpu else ""
        # the bytes checked are the bytes loaded (sha256, size, no link, no external data); never the path
        model = read_verified(self.directory, self.manifest, self.file)
        try:
            session = new_session(model, self.session_options(), providers)
        except Exception as error:  # ORT raises its own Fail/InvalidArgument/RuntimeException types
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if self.gpu:
                loaded = f"; loading CUDA libraries said: {preload_note[:200]}" if preload_note else ""
                raise BackendError(
                    f"backend {self.name!r} could not start on this machine ({message}){loaded}; "
                    f"providers offered: {', '.join(available)}; check the GPU and driver "
                    "(nvidia-smi) or choose --backend cpu"
                ) from None
            raise ArtifactError(
                f"{self.onnx_path}: onnxruntime cannot load it ({message}); re-export"
            ) from None
        got = session.get_providers()
        if got[0] != wanted[0]:
            raise BackendError(
                f"backend {self.name!r} asked for {wanted[0]} but onnxruntime gave {', '.join(got)}"
                f"{why_trt}; refusing to run on another provider"
            )
        self.placement = node_placement(session) if self.gpu else []
        on_cpu = cpu_placed_compute(self.placement, wanted[0])
        if on_cpu:
            raise BackendError(
                f"backend {self.name!r}: onnxruntime put compute on the CPU ({', '.join(on_cpu[:4])}); "
                "refusing to run it there; check the onnxruntime-gpu version (docs/gpu.md) or choose "
                "--backend cpu"
            )
        try:
            graph_inputs, graph_outputs = session.get_inputs(), session.get_outputs()
            inputs, outputs = [i.name for i in graph_inputs], [o.name for o in graph_outputs]
            # shapes and types are decoded lazily; a damaged graph can fail here (e.g. non-UTF-8 names)
            described = [(i.shape, i.type) for i in graph_inputs + graph_outputs]
        except Exception as error:
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ArtifactError(
                f"{self.onnx_path}: onnxruntime cannot describe the graph's inputs/outputs ({message}); "
                "the file is damaged, re-export"
            ) from None
        if inputs != [self._input_name] or self._output_name not in outputs or not described:
            raise ArtifactError(
                f"{self.onnx_path}: graph inputs {inputs} / outputs {outputs} do not match the manifest's "
                f"{self._input_name!r} → {self._output_name!r}; re-export the artifact"
            )
        check_graph_io(
            self.onnx_path, self.manifest, graph_inputs[0], graph_outputs[outputs.index(self._output_name)]
        )
        self.session = session
        self._output_names = [self._output_name]

    def infer_impl(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        limit = self._batch_limit
        if limit is not None and batch.shape[0] > limit:  # the TensorRT provider's profile max (derived)
            parts = [self.infer_impl(batch[i : i + limit], timings) for i in range(0, batch.shape[0], limit)]
            return np.concatenate(parts)
        # Plain run (no IOBinding): on the CPU ORT wraps the numpy buffer without a copy.
        start = time.perf_counter()
        try:
            output = self.session.run(self._output_names, {self._input_name: batch})[0]
        except Exception as error:  # ORT's own exception types derive from Exception only
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if type(error).__name__ == "InvalidArgument":  # the input does not fit the graph
                raise ValueError(
                    f"{self.name}: the graph refused a batch of shape {batch.shape} ({message})"
                ) from error
            raise BackendError(f"{self.name}: onnxruntime failed to run the graph ({message})") from error
        timings["compute"] = timings.get("compute", 0.0) + time.perf_counter() - start
        return output

    def deactivate_impl(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["providers"] = self.session.get_providers() if self.session is not None else None
        info["threads"] = self.threads
        if self.placement:  # the small shape subgraphs the CUDA provider leaves on the CPU, by design
            cpu = [f"{op}:{name}" for ep, op, name in self.placement if ep == "CPUExecutionProvider"]
            info["nodes_on_cpu"] = cpu
        return info
