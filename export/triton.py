"""A Triton Inference Server model repository from an artifact (serving at scale is Triton's job, not ours).

    REPO/<name>/config.pbtxt      platform "onnxruntime_onnx", 1/model.onnx
    REPO/<name>-trt/config.pbtxt  platform "tensorrt_plan",    1/model.plan   (only when an engine was built)

`max_batch_size` is the profile's max (dims then exclude the batch axis; the engine's profile covers it),
dynamic batching prefers the profile's opt and max; ONNX instances go where Triton finds a device
(KIND_AUTO), plan instances on the GPU. Every config is parsed back with Triton's own ModelConfig
protobuf (tritonclient) before it is written, so a typo cannot ship. Each model folder is written beside its
final place and renamed, like the artifact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


def config_text(
    name: str,
    platform: str,
    manifest: Mapping[str, Any],
    *,
    instance_kind: str = "KIND_GPU",
    instances: int = 1,
    max_queue_delay_us: int = 100,
) -> str:
    """config.pbtxt text for one model of the artifact described by `manifest` (its JSON form)."""
    batch = manifest["batch"]
    max_batch = int(batch["max"])
    preferred = sorted({int(b) for b in (batch.get("opt", max_batch), max_batch) if 1 <= int(b) <= max_batch})

    def tensor(spec: Mapping[str, Any]) -> str:
        dims = ", ".join(str(int(d)) for d in spec["shape"][1:])  # without the batch axis
        dtype = _TRITON_TYPES[spec["dtype"]]
        return f'  {{\n    name: "{spec["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'

    return (
        f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch}\n"
        f"input [\n{tensor(manifest['input'])}\n]\n"
        f"output [\n{tensor(manifest['output'])}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n"
        "}\n"
        "instance_group [\n"
        f"  {{\n    count: {int(instances)}\n    kind: {instance_kind}\n  }}\n"
        "]\n"
    )


def parse_config(text: str) -> Any:
    """Parse config.pbtxt with Triton's ModelConfig protobuf; ExportError (one line) if it does not parse."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ExportError("--triton-repo needs tritonclient (pip install 'recon[triton]')") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ExportError(f"generated Triton config does not parse: {error}") from None


def _write_model(repo: Path, name: str, text: str, source: Path, file_name: str, force: bool) -> Path:
    parse_config(text)
    target = repo / name
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=repo))
    try:
        (temp / "1").mkdir()
        shutil.copyfile(source, temp / "1" / file_name)
        (temp / "config.pbtxt").write_text(text)
        temp.chmod(0o755)
        if target.exists():
            old = repo / f".{name}.old-{os.getpid()}"
            os.rename(target, old)
            os.rename(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, target)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return target


def write_triton_repository(
    repo: str | os.PathLike,
    artifact: str | os.PathLike,
    manifest: Mapping[str, Any],
    *,
    name: str | None = None,
    onnx_precision: str = "fp32",
    instances: int = 1,
    max_queue_delay_us: int = 100,
    force: bool = False,
) -> list[Path]:
    """Write the ONNX model (and the TensorRT plan when the artifact has one); return the model folders."""
    repo, artifact = Path(repo), Path(artifact)
    name = name or str(manifest["name"])
    files = manifest["files"]
    onnx_file = next(
        (f for f, e in files.items() if e["kind"] == "onnx" and e.get("precision") == onnx_precision), None
    )
    if onnx_file is None:
        raise ExportError(f"the artifact has no {onnx_precision} ONNX file for the Triton repository")
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create the Triton repository {repo}: {error.strerror}") from None
    onnx_config = config_text(
        name, "onnxruntime_onnx", manifest, instance_kind="KIND_AUTO", instances=instances,
        max_queue_delay_us=max_queue_delay_us,
    )  # fmt: skip
    written = [_write_model(repo, name, onnx_config, artifact / onnx_file, "model.onnx", force)]
    plan = next((f for f, e in files.items() if e["kind"] == "tensorrt"), None)
    if plan is not None:
        trt_name = f"{name}-trt"
        trt_config = config_text(
            trt_name, "tensorrt_plan", manifest, instance_kind="KIND_GPU", instances=instances,
            max_queue_delay_us=max_queue_delay_us,
        )  # fmt: skip
        written.append(_write_model(repo, trt_name, trt_config, artifact / plan, "model.plan", force))
    return written
