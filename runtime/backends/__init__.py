"""Backends by name, and `auto`'s choice among them.

Names: "onnxruntime-cpu" (alias "cpu"), "onnxruntime-cuda" (alias "cuda"), "onnxruntime-tensorrt",
"tensorrt". An explicit name never falls back; "auto" tries TensorRT plan → ORT CUDA → ORT CPU and says why.
"""

from __future__ import annotations

import os
from typing import Any

from recon.runtime.backends.base import STAGES, Backend, BackendError
from recon.runtime.manifest import ArtifactError, Manifest

BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
ALIASES = {
    "cpu": "onnxruntime-cpu",
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

__all__ = [
    "ALIASES",
    "BACKENDS",
    "STAGES",
    "Backend",
    "BackendError",
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
    known = _TRT_OPTIONS if name == "tensorrt" else _ORT_OPTIONS
    unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
    if unknown:
        raise ValueError(f"backend {name!r} takes no option(s) {unknown}; it takes {list(known)}")
    options = {k: v for k, v in options.items() if k in known and v is not None}
    if name == "tensorrt":
        from recon.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(directory, manifest, **options)
    from recon.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(directory, manifest, name=name, **options)


def _options_for(name: str, options: dict[str, Any]) -> dict[str, Any]:
    known = _TRT_OPTIONS if name == "tensorrt" else _ORT_OPTIONS
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

    known = set(_ORT_OPTIONS) | set(_TRT_OPTIONS)
    unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
    if unknown:
        raise ValueError(f"unknown backend option(s) {unknown}; known: {sorted(known)}")
    skipped: list[str] = []

    if manifest.plan_file() is None:
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
    if "CUDAExecutionProvider" in providers:
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

    chosen = create_backend("onnxruntime-cpu", directory, manifest, **_options_for("ort", options))
    chosen.activate()
    return chosen, "onnxruntime-cpu: " + "; ".join(skipped)
