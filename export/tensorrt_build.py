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
  (`<node>_myl0_<k>`) included. The build fails when a network convolution did not run in FP16, or an FP32
  island layer ran in reduced precision.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError
from recon.runtime.backends.base import BackendError
from recon.runtime.backends.tensorrt import (
    cuda_device,
    import_cudart,
    installed_tensorrt_cuda_major,
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


@dataclass(frozen=True)
class BuilderSettings:
    """Everything `apply_settings` does to a TensorRT builder config, by TensorRT enum name."""

    network_flags: tuple[str, ...]
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]
    workspace_bytes: int
    optimization_level: int
    profiling_verbosity: str
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input → min, opt, max
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
) -> BuilderSettings:
    """The builder flags, profile and cache path for these options and this TensorRT, as data."""
    major = version_tuple(tensorrt_version)[:1] or (0,)
    # NvInfer.h (10.x): kSTRONGLY_TYPED is a network-creation flag; TensorRT 11 deprecates and ignores it.
    network_flags = ("STRONGLY_TYPED",) if major[0] < 11 else ()
    set_flags: tuple[str, ...] = ()
    if options.version_compatible:
        # EXCLUDE_LEAN_RUNTIME keeps the plan small but ties it to a lean runtime of exactly this version;
        # the manifest records the version and the runtime checks it exactly (check_engine_compatible).
        set_flags = ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")
    lo, opt, hi = profile_shapes(options.batch, input_chw, spatial)
    manifest = {
        "version": ".".join(map(str, version_tuple(tensorrt_version))) or str(tensorrt_version),
        "version_compatible": bool(options.version_compatible),
        "lean_runtime_excluded": bool(options.version_compatible),
        "hardware_compatibility_level": "none",
        "tf32": False,
        "profile": {"min": lo[0], "opt": opt[0], "max": hi[0]},
        **({"spatial_profile": {"min": lo[2], "opt": opt[2], "max": hi[2]}} if spatial else {}),
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
        profile={input_name: (lo, opt, hi)},
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
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in settings.profile.items():
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
    node_order: Sequence[str] = (),
    spatial: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Build, save, and inspect an engine; return the manifest's `tensorrt` entry plus the layer summary.

    `spatial` (min, opt, max side): the profile's H, W range for a graph with symbolic H, W.
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
    )
    _set_device(settings.device_id)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for flag in settings.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    network = builder.create_network(flags)
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

    _, opt, _ = settings.profile[input_name]
    layers = inspect_engine(trt, plan_bytes, input_name, opt, options.version_compatible)
    summary = summarize_layers(layers, fp32_island_nodes, conv_nodes, node_order)
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
    runtime = trt.Runtime(_logger(trt))
    if version_compatible:
        runtime.engine_host_code_allowed = True  # our own freshly built plan
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


# -- judging the inspector's layers (plain data) ----------------------------------------------------------
REDUCED = ("fp16", "bf16", "tf32", "int8", "fp8")


def format_precision(text: str) -> str:
    """The data type in an inspector "Format/Datatype" ("Row major linear FP32 format", "Half", ...)."""
    t = str(text).lower()
    # order matters: "bfloat16" contains "float", "fp16" must not read as "fp1"
    for precision, pattern in (
        ("bf16", r"bfloat16|\bbf16\b"),
        ("fp16", r"\bfp16\b|\bhalf\b|float16"),
        ("fp8", r"\bfp8\b|e4m3|e5m2"),
        ("int8", r"\bint8\b"),
        ("int64", r"\bint64\b"),
        ("int32", r"\bint32\b"),
        ("bool", r"\bbool\b"),
        ("fp32", r"\bfp32\b|\bfloat\b|float32"),
    ):
        if re.search(pattern, t):
            return precision
    return "unknown"


def tactic_precision(tactic: str) -> str | None:
    """The math precision a kernel name states (xmma/cutlass: `..._f16f16_f16f32_f32`), or None."""
    t = str(tactic).lower()
    if t.startswith("__myl_") or not t:  # Myelin's generated kernels name the fusion, not the type
        return None
    if "tf32" in t:
        return "tf32"
    if "bf16" in t:
        return "bf16"
    if re.search(r"f16f16|fp16|h884|h1688|h16816|hmma|_f16_|half", t):
        return "fp16"
    if re.search(r"i8i8|int8|imma", t):
        return "int8"
    if re.search(r"f32f32|fp32|sgemm|scudnn|_f32_", t):
        return "fp32"
    return None


def layer_precision(layer: dict[str, Any]) -> str:
    """Tactic first, else the first output's format, else the first input's."""
    by_tactic = tactic_precision(str(layer.get("TacticName", "")))
    if by_tactic is not None:
        return by_tactic
    for side in ("Outputs", "Inputs"):
        tensors = layer.get(side) or []
        if tensors and isinstance(tensors[0], dict):
            precision = format_precision(str(tensors[0].get("Format/Datatype", "")))
            if precision != "unknown":
                return precision
    return "unknown"


_MYELIN_SUFFIX = re.compile(r"_myl\d+_\d+$")


def layer_nodes(layer: dict[str, Any], node_order: Sequence[str] = ()) -> set[str]:
    """The ONNX node names a layer holds: its Metadata ("[ONNX Layer: a][ONNX Layer: b]"), its name's parts
    ("a + b", "PWN(a, b)"), Myelin sub-layers `<node>_myl0_<k>`, and `ForeignNode[a...b]` ranges expanded
    over the graph's topological `node_order` when given."""
    names: set[str] = set()
    metadata = str(layer.get("Metadata", "") or "")
    for item in re.findall(r"\[([^\[\]]+)\]", metadata):
        names.add(item.split("ONNX Layer:", 1)[-1].strip())
    name = str(layer.get("Name", ""))
    for first, last in re.findall(r"ForeignNode\[(.+?)\.\.\.(.+?)\]", name):
        if first in node_order and last in node_order:
            lo, hi = sorted((node_order.index(first), node_order.index(last)))
            names.update(node_order[lo : hi + 1])
        names.update((first, last))
    for token in re.split(r"\s\+\s|[\s,(){}\[\]]+|\.\.\.", name):
        # Myelin's own kernels (`__myl_MulSum_myl0_0`, `__mye12_dconst`) name a fusion, not a node
        if token and not token.startswith("__my") and token not in ("ForeignNode", "PWN"):
            names.add(_MYELIN_SUFFIX.sub("", token))
    return {n for n in names if n}


def _is_conv(layer: dict[str, Any]) -> bool:
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}".lower()
    return "conv" in kind or "deconv" in kind


def summarize_layers(
    layers: list[dict[str, Any]],
    fp32_island_nodes: set[str] | frozenset[str] = frozenset(),
    conv_nodes: set[str] | frozenset[str] = frozenset(),
    node_order: Sequence[str] = (),
) -> dict[str, Any]:
    """Count network convolution layers by precision and find FP32-island layers that ran reduced.

    A layer is a network convolution when it holds an ONNX Conv node of the network (or its type says
    convolution and it holds no island node); it is an island layer when it holds island nodes only.
    """
    summary: dict[str, Any] = {
        "layers": len(layers), "conv_fp16": 0, "conv_fp32": 0, "conv_other": 0, "island_layers": 0,
        "conv_fp32_names": [], "island_reduced_names": [], "precisions": {},
    }  # fmt: skip
    for layer in layers:
        precision = layer_precision(layer)
        summary["precisions"][precision] = summary["precisions"].get(precision, 0) + 1
        name = str(layer.get("Name", ""))[:120]
        if name.startswith("Reformatting CopyNode"):  # named after its consumer; it computes nothing
            continue
        nodes = layer_nodes(layer, node_order)
        island = bool(nodes) and nodes <= set(fp32_island_nodes)
        if nodes & set(conv_nodes) or (_is_conv(layer) and not nodes & set(fp32_island_nodes)):
            if precision == "fp16":
                summary["conv_fp16"] += 1
            elif precision in ("fp32", "tf32"):
                summary["conv_fp32"] += 1
                summary["conv_fp32_names"].append(name)
            else:
                summary["conv_other"] += 1
        elif island:
            summary["island_layers"] += 1
            if precision in REDUCED:
                summary["island_reduced_names"].append(f"{name} ({precision})")
    return summary


def check_engine_precision(summary: dict[str, Any], expect_fp16: bool = True) -> None:
    """Raise when an FP32 island ran reduced, or --fp16 was asked and a network conv ran FP32 / none FP16."""
    if summary["island_reduced_names"]:
        raise ExportError(
            "FP32-island layers (FBP / physics) ran in reduced precision: "
            f"{summary['island_reduced_names'][:3]}; the engine would lose the accuracy the islands keep"
        )
    if not expect_fp16:
        return
    if summary["conv_fp32"]:
        raise ExportError(
            f"the engine runs {summary['conv_fp32']} network convolution layer(s) in FP32 though --fp16 was "
            f"asked (e.g. {summary['conv_fp32_names'][:2]}); the FP16 ONNX did not reach TensorRT as FP16"
        )
    if not summary["conv_fp16"] and not summary["precisions"].get("fp16"):
        raise ExportError("the engine holds no FP16 layer though --fp16 was asked")


check_engine_fp16 = check_engine_precision  # the name the first version exported
