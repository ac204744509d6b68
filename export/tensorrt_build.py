"""FP16 ONNX → TensorRT engine (strongly typed), inspected layer by layer; for TensorRT 10.12+ and 11.

Every decision is plain data first (`builder_settings`, `summarize_layers`, `timing_cache_path`), unit-tested
on a CPU, and applied to the real TensorRT objects only in `apply_settings` / `build_engine`:
- Precision lives in the ONNX graph: TensorRT 11 removed `BuilderFlag.FP16` and builds every network strongly
  typed (an FP32 ONNX silently gives an FP32 engine). On 10.x the `STRONGLY_TYPED` creation flag asks for
  the same behaviour; on 11 the flag is deprecated and ignored, so it is only set below 11. No
  `EXPLICIT_BATCH` (gone).
- TF32 is cleared: NvInfer.h documents `BuilderFlag::kTF32` as on by default, and Polygraphy's `CreateConfig`
  (backend/trt/config.py) clears it unless asked. Left on, the CT graph's FP32 island (the FBP's ramp-filter
  MatMul) would run with 10-bit mantissas on Ampere and later: what the island exists to prevent.
- The CUDA device is checked (the runtime's cuda-python query, `cuda_device`) before TensorRT is
  imported: without a GPU a TensorRT `Runtime` can segfault when freed. The build runs on `device_id`.
- The engine is deserialized and inspected (`ProfilingVerbosity.DETAILED`, engine inspector JSON with an
  execution context at the opt shape, since dynamic shapes otherwise hide the formats). Each layer's
  precision is judged from its tactic name, else its output format (a fused input Cast reads FP32), and its
  ONNX nodes from the inspector's `Metadata` ("[ONNX Layer: name]") and its name, Myelin sub-layers
  (`<node>_myl0_<k>`) included, Myelin `ForeignNode[a...b]` ranges as the nodes on a path from a to b. The
  verdict (a network convolution not in FP16, an FP32 island layer in reduced precision) is a warning in the
  export's notes until a real engine's inspector output is a test fixture (`EngineOptions.layer_check`).
- The optimization profiles come from the graph (tensorrt_profile): no tensor reaches 2³¹ elements and each
  context's activations fit a budget; where one profile cannot cover the range there are two.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError
from recon.export.tensorrt_inspect import (  # noqa: F401 - re-exported: the names this module had
    REDUCED,
    check_engine_fp16,
    check_engine_precision,
    format_precision,
    layer_nodes,
    layer_precision,
    nodes_between,
    onnx_node_edges,
    precision_problems,
    summarize_layers,
    tactic_precision,
)
from recon.export.tensorrt_profile import (
    DEFAULT_ACTIVATION_BUDGET_MB,
    GraphFootprint,
    derive_profiles,
)
from recon.export.tensorrt_profile import profile_shapes as profile_input_shapes
from recon.runtime.backends.base import BackendError
from recon.runtime.backends.tensorrt import (
    check_cuda_majors,
    cuda_device,
    cuda_python_major,
    import_cudart,
    installed_tensorrt_cuda_major,
    new_runtime,
    version_tuple,
)
from recon.runtime.cache import cache_root

CACHE_DIR = cache_root()  # $XDG_CACHE_HOME/recon or the platform's (runtime/cache.py)
# The default timing cache: the file actually used is keyed on TensorRT version and GPU (`timing_cache_path`),
# since `set_timing_cache(cache, ignore_mismatch=False)` refuses a cache from another GPU or TensorRT.
DEFAULT_TIMING_CACHE = CACHE_DIR / "tensorrt-timing.cache"


# -- can we build here? ------------------------------------------------------------------------------------
def cuda_device_info(device_id: int = 0) -> tuple[dict[str, Any] | None, str]:
    """({name, compute_capability "8.6"}, "") for a usable CUDA device, else (None, one-line reason).

    The runtime's query (cuda-python's cudaGetDeviceCount / cudaGetDeviceProperties), the one recon has."""
    try:
        device = cuda_device(device_id)
    except BackendError as error:
        return None, str(error)
    return {
        "name": device["name"],
        "compute_capability": ".".join(map(str, device["compute_capability"])),
    }, ""


def tensorrt_builder_status(device_id: int = 0) -> tuple[Any | None, dict[str, Any] | None, str]:
    """(tensorrt module, device, "") when an engine can be built here; else (None, None, why not)."""
    device, reason = cuda_device_info(device_id)
    if device is None:
        return None, None, reason
    try:
        import tensorrt as trt
    except ImportError:
        return (
            None,
            None,
            "the TensorRT builder is not installed (pip install 'recon[gpu]'; the lean runtime cannot build)",
        )
    except Exception as exc:  # the stub wheel raises on import when its libraries are missing
        return (
            None,
            None,
            f"TensorRT failed to import ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
        )
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        return None, None, "this TensorRT has no builder/ONNX parser (a lean or dispatch runtime)"
    try:  # before the build, not after it (the runtime's check would refuse the engine at parity)
        check_cuda_majors(installed_tensorrt_cuda_major(), cuda_python_major())
    except BackendError as error:
        return None, None, str(error)
    return trt, device, ""


# -- the builder's decisions, as plain data ------------------------------------------------------------------
@dataclass
class EngineOptions:
    batch: tuple[int, int, int] = (1, 8, 32)  # min, opt, max
    workspace_mb: int = 4096
    opt_level: int = 3
    timing_cache: Path | None = DEFAULT_TIMING_CACHE  # None: no timing cache
    version_compatible: bool = False  # --lean: VERSION_COMPATIBLE + EXCLUDE_LEAN_RUNTIME
    expect_fp16: bool = True
    device_id: int = 0
    # one execution context's activations at its profile max (tensorrt_profile.derive_profiles)
    activation_budget_mb: int = DEFAULT_ACTIVATION_BUDGET_MB
    # the FP16 layer verdict was never fed a real engine's inspector output: "warn" records it in the notes,
    # "error" fails the export (once tests/export/data holds a real engine's inspector JSON)
    layer_check: str = "warn"


@dataclass(frozen=True)
class BuilderSettings:
    """Everything `apply_settings` does to a TensorRT builder config, by TensorRT enum name."""

    network_flags: tuple[str, ...]
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]
    workspace_bytes: int
    optimization_level: int
    profiling_verbosity: str
    # one {input: (min, opt, max)} per optimization profile, in profile order
    profiles: tuple[dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]], ...]
    timing_cache: Path | None
    device_id: int
    manifest: dict[str, Any] = field(default_factory=dict)  # what the plan's manifest entry says of it


def profile_shapes(
    batch: tuple[int, int, int], input_chw: Sequence[int], spatial: tuple[int, int, int] | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes of the one optimization profile; refuses a batch that is not ordered.

    `spatial` (min, opt, max side) gives H and W their own range, for a graph with symbolic H, W (then only
    the channels of `input_chw` are used).
    """
    lo, opt, hi = (int(b) for b in batch)
    if not 1 <= lo <= opt <= hi:
        raise ExportError(f"the batch profile must satisfy 1 <= min <= opt <= max, got {lo}:{opt}:{hi}")
    chw = tuple(int(d) for d in input_chw)
    if spatial is None:
        return (lo, *chw), (opt, *chw), (hi, *chw)
    s_lo, s_opt, s_hi = (int(s) for s in spatial)
    return (lo, chw[0], s_lo, s_lo), (opt, chw[0], s_opt, s_opt), (hi, chw[0], s_hi, s_hi)


def timing_cache_path(requested: Path | None, tensorrt_version: str, compute_capability: str) -> Path | None:
    """The timing cache file: the default one is keyed on TensorRT version and GPU; a user's path is kept."""
    if requested is None:
        return None
    if Path(requested) != DEFAULT_TIMING_CACHE:
        return Path(requested)
    release = ".".join(map(str, version_tuple(tensorrt_version))) or "unknown"
    return CACHE_DIR / f"tensorrt-{release}-sm{compute_capability.replace('.', '')}.timing-cache"


def builder_settings(
    options: EngineOptions,
    tensorrt_version: str,
    input_name: str,
    input_chw: Sequence[int],
    compute_capability: str = "0.0",
    cuda_major: int | None = None,
    spatial: tuple[int, int, int] | None = None,
    *,
    footprint: GraphFootprint,
) -> BuilderSettings:
    """The builder flags, profiles and cache path for these options and this TensorRT, as data.

    The profiles come from the graph's measured `footprint` (tensorrt_profile): every tensor below 2³¹
    elements and each context's activations within `options.activation_budget_mb` at its profile max."""
    major = version_tuple(tensorrt_version)[:1] or (0,)
    # NvInfer.h (10.x): kSTRONGLY_TYPED is a network-creation flag; TensorRT 11 deprecates and ignores it.
    network_flags = ("STRONGLY_TYPED",) if major[0] < 11 else ()
    set_flags: tuple[str, ...] = ()
    if options.version_compatible:
        # EXCLUDE_LEAN_RUNTIME keeps the plan small but ties it to a lean runtime of exactly this version;
        # the manifest records the version and the runtime checks it exactly (check_engine_compatible).
        set_flags = ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")
    lo, opt, hi = profile_shapes(options.batch, input_chw, spatial)  # the request, checked for order
    profiles = derive_profiles(footprint, options.batch, spatial, int(options.activation_budget_mb) << 20)
    manifest = {
        "version": ".".join(map(str, version_tuple(tensorrt_version))) or str(tensorrt_version),
        "version_compatible": bool(options.version_compatible),
        "lean_runtime_excluded": bool(options.version_compatible),
        "hardware_compatibility_level": "none",
        "tf32": False,
        "profile": {"min": lo[0], "opt": opt[0], "max": hi[0]},
        **({"spatial_profile": {"min": lo[2], "opt": opt[2], "max": hi[2]}} if spatial else {}),
        # what the engine holds: the runtime picks the first profile that takes a request
        "profiles": [p.to_json() for p in profiles],
        "footprint": footprint.to_json(),
        "activation_budget_mb": int(options.activation_budget_mb),
        "builder_optimization_level": int(options.opt_level),
        "workspace_mb": int(options.workspace_mb),
        "device_id": int(options.device_id),
    }
    if cuda_major is not None:
        manifest["cuda_major"] = int(cuda_major)
    return BuilderSettings(
        network_flags=network_flags,
        set_flags=set_flags,
        clear_flags=("TF32",),
        workspace_bytes=int(options.workspace_mb) << 20,
        optimization_level=int(options.opt_level),
        profiling_verbosity="DETAILED",
        profiles=tuple({input_name: profile_input_shapes(p, input_chw)} for p in profiles),
        timing_cache=timing_cache_path(options.timing_cache, tensorrt_version, compute_capability),
        device_id=int(options.device_id),
        manifest=manifest,
    )


# -- building ----------------------------------------------------------------------------------------------
def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.ERROR)


def _set_device(device_id: int) -> None:
    """Make `device_id` current for this thread before TensorRT allocates anything (builder, inspector)."""
    (error,) = import_cudart().cudaSetDevice(int(device_id))
    if int(error) != 0:
        raise ExportError(f"cudaSetDevice({device_id}) failed ({error})")


def network_creation_flags(names: Sequence[str], flag_enum: Any) -> int:
    """The bit mask `Builder.create_network` takes: bit `int(flag)` for each flag named (NvInfer.h:
    `1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kSTRONGLY_TYPED)`, kSTRONGLY_TYPED = 1)."""
    flags = 0
    for name in names:
        flags |= 1 << int(flag_enum[name] if isinstance(flag_enum, Mapping) else getattr(flag_enum, name))
    return flags


def apply_settings(trt: Any, builder: Any, network: Any, settings: BuilderSettings) -> Any:
    """A builder config with `settings` applied (the only place the settings meet TensorRT objects)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, settings.profiling_verbosity)
    for flag in settings.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in settings.clear_flags:
        if hasattr(trt.BuilderFlag, flag):  # a future TensorRT may drop TF32 as it dropped FP16
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    for shapes in settings.profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    return config


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    *,
    input_name: str,
    input_chw: tuple[int, int, int],
    options: EngineOptions,
    fp32_island_nodes: set[str] | frozenset[str] = frozenset(),
    conv_nodes: set[str] | frozenset[str] = frozenset(),
    node_edges: Mapping[str, Sequence[str]] | None = None,
    spatial: tuple[int, int, int] | None = None,
    footprint: GraphFootprint,
) -> dict[str, Any]:
    """Build, save, and inspect an engine; return the manifest's `tensorrt` entry plus the layer summary.

    `spatial` (min, opt, max side): the profile's H, W range for a graph with symbolic H, W; `footprint`: the
    graph's measured size (tensorrt_profile.measure_footprint); `node_edges`: node → consumer nodes of the
    ONNX graph (`onnx_node_edges`), to expand Myelin's ForeignNode ranges.
    """
    trt, device, reason = tensorrt_builder_status(options.device_id)
    if trt is None:
        raise ExportError(f"cannot build a TensorRT engine: {reason}")
    cuda_major = installed_tensorrt_cuda_major()
    settings = builder_settings(
        options,
        str(trt.__version__),
        input_name,
        input_chw,
        device["compute_capability"],
        cuda_major,
        spatial,
        footprint=footprint,
    )
    _set_device(settings.device_id)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(
        network_creation_flags(settings.network_flags, trt.NetworkDefinitionCreationFlag)
    )
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT could not parse {Path(onnx_path).name}: {'; '.join(errors[:3]) or 'unknown error'}"
        )
    config = apply_settings(trt, builder, network, settings)

    cache_path = settings.timing_cache
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    # ignore_mismatch=False: a cache from another GPU / TensorRT is refused; start an empty one then.
    if cache is None or not config.set_timing_cache(cache, False):
        config.set_timing_cache(config.create_timing_cache(b""), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            "TensorRT failed to build the engine (see the TensorRT log above); try a larger --workspace-mb"
        )
    plan_bytes = bytes(serialized)
    Path(plan_path).write_bytes(plan_bytes)
    if cache_path is not None:
        _save_timing_cache(config.get_timing_cache().serialize(), cache_path)

    _, opt, _ = settings.profiles[0][input_name]
    layers = inspect_engine(trt, plan_bytes, input_name, opt, options.version_compatible)
    summary = summarize_layers(layers, fp32_island_nodes, conv_nodes, node_edges)
    summary["precision_problems"] = precision_problems(summary, expect_fp16=options.expect_fp16)
    if options.layer_check == "error":
        check_engine_precision(summary, expect_fp16=options.expect_fp16)
    summary["inspector"] = layers  # the raw inspector JSON, kept in parity.json: the next test fixture
    return {
        "tensorrt": {
            **settings.manifest,
            "compute_capability": device["compute_capability"],
            "device_name": device["name"],
        },
        "layers": summary,
    }


def _save_timing_cache(serialized: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, path)  # another export may read it at the same time: never half a cache


def inspect_engine(
    trt: Any, plan: bytes, input_name: str, shape: tuple[int, ...], version_compatible: bool
) -> list:
    """The engine inspector's layer list (DETAILED JSON), with formats resolved at `shape`."""
    # our own freshly built plan: host code allowed for a version-compatible one, as the runtime does
    runtime = new_runtime(trt, _logger(trt), {"version_compatible": version_compatible})
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportError("TensorRT could not deserialize the engine it just built")
    context = engine.create_execution_context()
    context.set_input_shape(input_name, shape)
    inspector = engine.create_engine_inspector()
    for attribute in ("execution_context", "context"):  # renamed across versions
        if hasattr(inspector, attribute):
            setattr(inspector, attribute, context)
            break
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    del inspector, context, engine, runtime
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    return [layer for layer in layers if isinstance(layer, dict)]
