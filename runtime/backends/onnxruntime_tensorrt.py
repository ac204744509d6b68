"""onnxruntime's TensorRT execution provider: its engine cache key, TF32, TensorRT's libraries, its profile.

Option names: onnxruntime tensorrt_execution_provider_info.cc. The provider links libnvinfer.so.10
(onnxruntime-gpu 1.26-1.31, readelf), builds weakly typed networks (no strong-typing option), has no TF32
option and caches engines under an id that ignores the weights (TRTGenerateId). docs/gpu.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from recon.runtime.artifact.gpu_profiles import Profile
from recon.runtime.artifact.manifest import ArtifactError, Manifest


def trt_cache_paths(
    cache_root: str | os.PathLike, artifact: str, onnx_sha256: str, fp16: bool, tf32: str
) -> tuple[Path, Path]:
    """(engine cache folder, timing cache folder) for the TensorRT provider.

    Its engine cache id (TRTGenerateId, tensorrt_execution_provider_utils.h) hashes the model's file name,
    input and node-output names and the ORT/CUDA/TensorRT versions — not the weights, not `trt_fp16_enable`,
    not the TF32 state TensorRT read from NVIDIA_TF32_OVERRIDE when it built: a cached engine would be reused
    across all of them. The folder is keyed on the ONNX file's sha256, the FP16 flag and `tf32`
    (`tf32_state`). Without trt_timing_cache_path the timing cache is written to the working directory; it
    is shared per machine.
    """
    root = Path(cache_root)
    return root / f"{artifact}-{onnx_sha256[:16]}-{'fp16' if fp16 else 'fp32'}-tf32{tf32}", root / "timing"


TF32_VARIABLE = "NVIDIA_TF32_OVERRIDE"


def tf32_state(environ: dict[str, str] | os._Environ) -> tuple[str, dict[str, str]]:
    """(TF32 state for the cache key, variables to set) for a TensorRT-provider session.

    The provider has no TF32 option and TensorRT's TF32 is on by default (NvInfer.h), so FP32 layers (the CT
    graph's FBP island) would run with 10-bit mantissas; NVIDIA_TF32_OVERRIDE=0 turns it off for the whole
    process, read when CUDA libraries start. Unset: set it to "0" ("off"). "0": "off". Anything else: "on",
    which the backend refuses."""
    value = environ.get(TF32_VARIABLE)
    if value is None:
        return "off", {TF32_VARIABLE: "0"}
    return ("off", {}) if value.strip() == "0" else ("on", {})


TENSORRT_PROVIDER_LIBRARY = "libnvinfer.so.10"  # what onnxruntime-gpu 1.26-1.31's provider links (readelf)


def load_tensorrt_libraries() -> str:
    """Load TensorRT's libraries for onnxruntime's TensorRT provider; "" when loaded, else why not.

    pip's TensorRT keeps libnvinfer in the `tensorrt_libs` package, which loads it only on `import tensorrt`
    (tensorrt/__init__.py); the provider's library then finds it already loaded. `preload_dlls` loads CUDA
    and cuDNN only."""
    import ctypes

    try:
        import tensorrt
    except ImportError:
        note = "the tensorrt package is not installed (pip install 'recon[gpu]')"
    except Exception as error:  # the stub wheel raises when its libraries are missing
        note = f"import tensorrt failed ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    else:
        version = str(getattr(tensorrt, "__version__", "?"))
        if not version.startswith("10."):
            return f"tensorrt {version} is installed, and the provider links {TENSORRT_PROVIDER_LIBRARY}"
        note = ""
    try:
        ctypes.CDLL(TENSORRT_PROVIDER_LIBRARY, mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        return f"{TENSORRT_PROVIDER_LIBRARY} cannot be loaded ({note or str(error)[:160]})"
    return ""


def provider_profile(manifest: Manifest, file: str) -> Profile | None:
    """The TensorRT provider's one profile, derived from the graph at export (recon.export.tensorrt_profile);
    None for an artifact exported before. ArtifactError when the export found that no profile fits."""
    entry = manifest.files[file].tensorrt or {}
    if entry.get("error"):
        raise ArtifactError(f"the TensorRT provider cannot run {manifest.name!r}: {entry['error']}")
    return Profile.from_json(entry["provider_profile"]) if "provider_profile" in entry else None


def provider_profile_options(manifest: Manifest, file: str, name: str) -> dict[str, str]:
    """trt_profile_{min,opt,max}_shapes for the input `name`, as `name:BxCxHxW`."""
    profile = provider_profile(manifest, file)
    if profile is None:  # exported before profiles were derived: the manifest's ranges, as then
        batch = manifest.batch
        return {
            f"trt_profile_{level}_shapes": _profile_shape(manifest, name, getattr(batch, level), level)
            for level in ("min", "opt", "max")
        }
    fixed = list(manifest.input.shape[1:])
    options = {}
    for index, level in enumerate(("min", "opt", "max")):
        dims = [profile.batch[index], *fixed]
        if profile.side is not None:
            dims[2] = dims[3] = profile.side[index]
        options[f"trt_profile_{level}_shapes"] = f"{name}:{'x'.join(str(d) for d in dims)}"
    return options


def _profile_shape(manifest: Manifest, name: str, batch: int, level: str = "opt") -> str:
    """`name:BxCxHxW` for the TensorRT EP's profile; symbolic H, W take the spatial entry's min/opt/max."""
    side = 256 if manifest.spatial is None else getattr(manifest.spatial, level)
    dims = [str(batch)] + [str(d if isinstance(d, int) else side) for d in manifest.input.shape[1:]]
    return f"{name}:{'x'.join(dims)}"
