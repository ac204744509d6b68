"""Backends by name, and `auto`'s choice among them.

Names: "onnxruntime-cpu" (alias "cpu"), "openvino" (alias "ov"), "onnxruntime-cuda" (alias "cuda"),
"onnxruntime-tensorrt", "tensorrt". An explicit name never falls back. "auto" tries TensorRT plan → ORT CUDA,
then picks a CPU engine (`cpu_engine_rule`) and says why.
"""

from __future__ import annotations

import os
from typing import Any

from recon.runtime.artifact.manifest import ArtifactError, Manifest
from recon.runtime.backends.base import STAGES, Backend, BackendError

BACKENDS = ("onnxruntime-cpu", "openvino", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
ALIASES = {
    "cpu": "onnxruntime-cpu",
    "ov": "openvino",
    "cuda": "onnxruntime-cuda",
    "ort-trt": "onnxruntime-tensorrt",
    "trt": "tensorrt",
}
_ORT_OPTIONS = (
    "precision",
    "threads",
    "device_id",
    "provider_options",
    "optimization_level",
    "trt_cache_dir",
    "log_severity_level",
)
_TRT_OPTIONS = ("precision", "device_id")
_OV_OPTIONS = ("precision", "threads")

__all__ = [
    "ALIASES",
    "BACKENDS",
    "STAGES",
    "Backend",
    "BackendError",
    "cpu_engine_rule",
    "create_backend",
    "resolve_name",
    "select_backend",
]


def resolve_name(name: str) -> str:
    """Canonical backend name for a name or alias; "auto" stays "auto"."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key != "auto" and key not in BACKENDS:
        choices = ", ".join(("auto", *BACKENDS, *ALIASES))
        raise ValueError(f"unknown backend {name!r}; choose one of: {choices}")
    return key


def create_backend(name: str, directory: str | os.PathLike, manifest: Manifest, **options: Any) -> Backend:
    """A backend, not yet active. Options the backend does not take are refused, not ignored."""
    name = resolve_name(name)
    if name == "auto":
        raise ValueError("create_backend needs a concrete backend; use select_backend for 'auto'")
    known = _known_options(name)
    unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
    if unknown:
        raise ValueError(f"backend {name!r} takes no option(s) {unknown}; it takes {list(known)}")
    options = {k: v for k, v in options.items() if k in known and v is not None}
    if name == "tensorrt":
        from recon.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(directory, manifest, **options)
    if name == "openvino":
        from recon.runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(directory, manifest, **options)
    from recon.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(directory, manifest, name=name, **options)


def _known_options(name: str) -> tuple[str, ...]:
    return {"tensorrt": _TRT_OPTIONS, "openvino": _OV_OPTIONS}.get(name, _ORT_OPTIONS)


def _options_for(name: str, options: dict[str, Any]) -> dict[str, Any]:
    known = _known_options(name)
    return {k: v for k, v in options.items() if k in known}


def select_backend(
    directory: str | os.PathLike, manifest: Manifest, backend: str = "auto", **options: Any
) -> tuple[Backend, str]:
    """An active backend and the reason it was chosen."""
    name = resolve_name(backend)
    if name != "auto":
        chosen = create_backend(name, directory, manifest, **options)
        chosen.activate()
        return chosen, f"{name}: asked for explicitly"

    known = set(_ORT_OPTIONS) | set(_TRT_OPTIONS) | set(_OV_OPTIONS)
    unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
    if unknown:
        raise ValueError(f"unknown backend option(s) {unknown}; known: {sorted(known)}")
    skipped: list[str] = []
    precision = options.get("precision") or "auto"

    if precision == "bf16":
        skipped.append("bf16 runs on the CPU only")
    elif manifest.plan_file() is None:
        skipped.append("the artifact has no TensorRT plan")
    else:
        try:
            chosen = create_backend("tensorrt", directory, manifest, **_options_for("tensorrt", options))
            chosen.activate()
            device = chosen.device or {}
            cc = ".".join(map(str, device.get("compute_capability", ())))
            return chosen, f"tensorrt: the artifact's plan runs on this {device.get('name', 'GPU')} (sm {cc})"
        except (BackendError, ArtifactError) as error:
            skipped.append(f"TensorRT plan not usable ({error})")

    from recon.runtime.backends.onnxruntime import available_providers

    providers = available_providers()
    if precision == "bf16":
        pass
    elif "CUDAExecutionProvider" in providers:
        try:
            chosen = create_backend("onnxruntime-cuda", directory, manifest, **_options_for("ort", options))
            chosen.activate()
            return chosen, "onnxruntime-cuda: " + "; ".join(skipped + ["onnxruntime's CUDA provider works"])
        except (BackendError, ArtifactError) as error:
            skipped.append(f"onnxruntime's CUDA provider did not start ({error})")
    else:
        skipped.append(
            f"onnxruntime offers no CUDA provider ({', '.join(providers) or 'onnxruntime missing'})"
        )

    from recon.runtime.backends.openvino import openvino_available

    ort_only = sorted(k for k, v in options.items() if v is not None and k not in _OV_OPTIONS)
    name, why = cpu_engine_rule(openvino_available(), bool(providers), precision, ort_only)
    if name == "openvino":
        try:
            chosen = create_backend("openvino", directory, manifest, **_options_for("openvino", options))
            chosen.activate()
            return chosen, "openvino: " + "; ".join([*skipped, why])
        except BackendError as error:
            if precision == "bf16" or not providers:
                raise
            skipped.append(f"OpenVINO did not start ({error})")
            why = "onnxruntime is the other CPU engine"
    chosen = create_backend("onnxruntime-cpu", directory, manifest, **_options_for("ort", options))
    chosen.activate()
    return chosen, "onnxruntime-cpu: " + "; ".join([*skipped, why])


def cpu_engine_rule(
    openvino: bool, onnxruntime: bool, precision: str = "auto", ort_only_options: list[str] | None = None
) -> tuple[str, str]:
    """The CPU engine `auto` picks, and why: OpenVINO where it is installed, else onnxruntime.

    Backed by bench/runtime.py (docs/benchmarks.md, "CPU engines side by side"): on the ResUNet at batch 1
    and 8, OpenVINO's INT8 on the same QDQ file is the fastest INT8 engine, its FP32 is on par with
    onnxruntime's, and it alone runs bf16. onnxruntime stays the choice when OpenVINO is missing or an
    option only onnxruntime takes (optimization_level, provider_options, ...) was given.
    """
    if precision == "bf16":
        if not openvino:
            raise BackendError(
                "precision bf16 runs on OpenVINO, which is not installed; `pip install recon[openvino]`"
            )
        return "openvino", "bf16 runs on OpenVINO (onnxruntime has no bf16 CPU path)"
    if ort_only_options:
        return "onnxruntime-cpu", f"option(s) {ort_only_options} are onnxruntime's"
    if openvino:
        return "openvino", "OpenVINO is installed: the fastest CPU engine here (docs/benchmarks.md)"
    if not onnxruntime:
        raise BackendError("no CPU engine is installed; `pip install recon[cpu]` or `recon[openvino]`")
    return "onnxruntime-cpu", "OpenVINO is not installed (`pip install recon[openvino]`)"
