"""FP16 ONNX → TensorRT engine (strongly typed), inspected layer by layer; for TensorRT 10.12+ and 11.

- Precision lives in the ONNX graph: TensorRT 11 removed `BuilderFlag.FP16` and builds every network strongly
  typed (an FP32 ONNX silently gives an FP32 engine). On 10.x the `STRONGLY_TYPED` creation flag asks for
  the same behaviour; on 11 the flag is deprecated and ignored, so it is only set below 11. No
  `EXPLICIT_BATCH` (gone).
- The CUDA device is checked (cuda-python `cudaGetDeviceCount`, else `nvidia-smi`) before TensorRT is
  imported: without a GPU a TensorRT `Runtime` can segfault when freed.
- The engine is deserialized and inspected (`ProfilingVerbosity.DETAILED`, engine inspector JSON with an
  execution context at the opt shape, since dynamic shapes otherwise hide the formats); the build fails when a
  network convolution did not run in FP16.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError

DEFAULT_TIMING_CACHE = Path.home() / ".cache" / "recon" / "tensorrt-timing.cache"


# -- can we build here? ------------------------------------------------------------------------------------
def cuda_device_info(device_id: int = 0) -> tuple[dict[str, Any] | None, str]:
    """({name, compute_capability}, "") for a usable CUDA device, else (None, one-line reason)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # cuda-python < 12.6
        except ImportError:
            cudart = None
    if cudart is not None:
        try:
            error, count = cudart.cudaGetDeviceCount()
        except Exception as exc:  # a missing driver library raises inside cuda-python
            return None, f"no CUDA driver ({type(exc).__name__})"
        if int(error) != 0 or count == 0:
            return None, "no CUDA GPU found (cudaGetDeviceCount)"
        if device_id >= count:
            return None, f"CUDA device {device_id} does not exist (found {count})"
        error, props = cudart.cudaGetDeviceProperties(device_id)
        if int(error) != 0:
            return None, "cudaGetDeviceProperties failed"
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}, ""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "no CUDA GPU found (no cuda-python, no nvidia-smi)"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, "no CUDA GPU found (nvidia-smi failed)"
    if device_id >= len(out):
        return None, "no CUDA GPU found (nvidia-smi lists none)"
    name, capability = (part.strip() for part in out[device_id].rsplit(",", 1))
    return {"name": name, "compute_capability": capability}, ""


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


def _major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


# -- building ----------------------------------------------------------------------------------------------
@dataclass
class EngineOptions:
    batch: tuple[int, int, int] = (1, 8, 32)  # min, opt, max
    workspace_mb: int = 4096
    opt_level: int = 3
    timing_cache: Path | None = DEFAULT_TIMING_CACHE
    version_compatible: bool = False  # --lean: VERSION_COMPATIBLE + EXCLUDE_LEAN_RUNTIME
    expect_fp16: bool = True
    device_id: int = 0


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.ERROR)


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    *,
    input_name: str,
    input_chw: tuple[int, int, int],
    options: EngineOptions,
    fp32_island_nodes: set[str] | frozenset[str] = frozenset(),
    conv_nodes: set[str] | frozenset[str] = frozenset(),
    spatial: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Build, save, and inspect an engine; return the manifest's `tensorrt` entry plus the layer summary.

    `spatial` (min, opt, max side) makes the profile's H and W ranges too, for a graph with symbolic H, W
    (`input_chw` then gives only the channels).
    """
    trt, device, reason = tensorrt_builder_status(options.device_id)
    if trt is None:
        raise ExportError(f"cannot build a TensorRT engine: {reason}")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if _major(trt) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT could not parse {Path(onnx_path).name}: {'; '.join(errors[:3]) or 'unknown error'}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    config.builder_optimization_level = int(options.opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)

    lo, opt, hi = options.batch
    profile = builder.create_optimization_profile()
    sides = (None, None, None) if spatial is None else spatial
    shapes = [
        (n, *input_chw) if side is None else (n, input_chw[0], side, side)
        for n, side in zip((lo, opt, hi), sides, strict=True)
    ]
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)

    cache_path = Path(options.timing_cache) if options.timing_cache else None
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

    layers = inspect_engine(trt, plan_bytes, input_name, shapes[1], options.version_compatible)
    summary = summarize_layers(layers, fp32_island_nodes, conv_nodes)
    if options.expect_fp16:
        check_engine_fp16(summary)
    return {
        "tensorrt": {
            "version": str(trt.__version__),
            "compute_capability": device["compute_capability"],
            "device_name": device["name"],
            "version_compatible": bool(options.version_compatible),
            "lean_runtime_excluded": bool(options.version_compatible),
            "hardware_compatibility_level": "none",
            "profile": {"min": lo, "opt": opt, "max": hi},
            "builder_optimization_level": int(options.opt_level),
            "workspace_mb": int(options.workspace_mb),
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


def _precision_of(text: str) -> str:
    text = text.lower()
    if "fp16" in text or "half" in text:
        return "fp16"
    if "int8" in text:
        return "int8"
    if "bf16" in text:
        return "bf16"
    if "fp32" in text or "float" in text:
        return "fp32"
    return "unknown"


def _name_patterns(names: set[str] | frozenset[str]) -> list[re.Pattern[str]]:
    return [re.compile(rf"(?<!\w){re.escape(name)}(?!\w)") for name in names]


def summarize_layers(
    layers: list[dict[str, Any]],
    fp32_island_nodes: set[str] | frozenset[str] = frozenset(),
    conv_nodes: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Count convolution layers by the precision of their data input; island (FBP) layers are counted apart.

    A layer is a convolution when its type says so, or when its name carries an ONNX Conv node's name (fused
    and Myelin layers are named after the nodes they hold).
    """
    island, convs = _name_patterns(fp32_island_nodes), _name_patterns(conv_nodes)
    summary: dict[str, Any] = {
        "layers": len(layers), "conv_fp16": 0, "conv_fp32": 0, "conv_other": 0, "island_convs": 0,
        "conv_fp32_names": [], "precisions": {},
    }  # fmt: skip
    for layer in layers:
        inputs = layer.get("Inputs") or [{}]
        first = inputs[0] if isinstance(inputs[0], dict) else {}
        precision = _precision_of(str(first.get("Format/Datatype", "")))
        summary["precisions"][precision] = summary["precisions"].get(precision, 0) + 1
        kind = str(layer.get("LayerType", "")) + " " + str(layer.get("ParameterType", ""))
        name = str(layer.get("Name", ""))
        if "conv" not in kind.lower() and not any(pattern.search(name) for pattern in convs):
            continue
        if any(pattern.search(name) for pattern in island):
            summary["island_convs"] += 1
        elif precision == "fp16":
            summary["conv_fp16"] += 1
        elif precision == "fp32":
            summary["conv_fp32"] += 1
            summary["conv_fp32_names"].append(name[:120])
        else:
            summary["conv_other"] += 1
    return summary


def check_engine_fp16(summary: dict[str, Any]) -> None:
    """Raise when --fp16 was asked and a network convolution runs in FP32, or nothing runs in FP16."""
    if summary["conv_fp32"]:
        raise ExportError(
            f"the engine runs {summary['conv_fp32']} network convolution layer(s) in FP32 though --fp16 was "
            f"asked (e.g. {summary['conv_fp32_names'][:2]}); the FP16 ONNX did not reach TensorRT as FP16"
        )
    if not summary["conv_fp16"] and not summary["precisions"].get("fp16"):
        raise ExportError("the engine holds no FP16 layer though --fp16 was asked")
