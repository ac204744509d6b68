"""A Triton Inference Server model repository from an artifact (serving at scale is Triton's job, not ours).

    REPO/<name>/config.pbtxt         platform "onnxruntime_onnx", 1/model.onnx        (native)
    REPO/<name>-trt/config.pbtxt     platform "tensorrt_plan",    1/model.plan        (native, with a plan)
    REPO/<name>-python/config.pbtxt  backend "python", 1/model.py + 1/artifact/      (python)

The native models are for the NGC container's onnxruntime/TensorRT backends; the python-backend model runs
the whole artifact through `recon.runtime` inside Triton (manifest and sha256 checked at load, input checks
and output clipping as in process; for CT the FBP is inside the graph, so sinogram in, image out). Its
`model.py` is `triton_python_model.py`, copied as text; the artifact folder is copied beside it so the
repository is self-contained.

`max_batch_size` is the profile's max (dims then exclude the batch axis; the engine's profile covers it),
dynamic batching prefers the profile's opt and max; ONNX instances go where Triton finds a device
(KIND_AUTO), plan instances on the GPU, python instances on the CPU (recon.runtime picks its own backend).
Every config is built as Triton's own ModelConfig protobuf message (`model_config_pb2` from
tritonclient[grpc]) and serialised with `google.protobuf.text_format`, so a misspelt field or enum fails
when it is set rather than in the server; the text is parsed back before it is written. Each model folder
is written beside its final place and renamed, like the artifact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}  # inference.DataType names
FLAVOURS = ("native", "python", "both")
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")  # copied as text, never imported here


def _protobuf() -> tuple[Any, Any]:
    """(text_format, model_config_pb2): Triton's ModelConfig schema as tritonclient[grpc] ships it."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ExportError("--triton-repo needs tritonclient (pip install 'recon[triton]')") from None
    return text_format, model_config_pb2


def model_config(
    name: str,
    platform: str,
    manifest: Mapping[str, Any],
    *,
    instance_kind: str = "KIND_GPU",
    instances: int = 1,
    max_queue_delay_us: int = 100,
    parameters: Mapping[str, str] | None = None,
) -> Any:
    """The `inference.ModelConfig` message for one model of the artifact described by `manifest` (its
    JSON form).

    `platform` is "onnxruntime_onnx", "tensorrt_plan" or "python" (set as `backend: "python"`).
    A symbolic spatial dim (an any-size artifact) becomes -1, Triton's variable dim.
    """
    _, pb = _protobuf()
    batch = manifest["batch"]
    max_batch = int(batch["max"])
    # a plan's profile refuses batches below its min (Triton's TensorRT backend rejects them), so the
    # batcher should not aim below it either
    floor = int(batch.get("min", 1)) if platform == "tensorrt_plan" else 1
    preferred = sorted(
        {int(b) for b in (batch.get("opt", max_batch), max_batch) if max(1, floor) <= int(b) <= max_batch}
    )
    config = pb.ModelConfig(name=name, max_batch_size=max_batch)
    if platform == "python":
        config.backend = "python"
    else:
        config.platform = platform
    try:
        for tensors, spec in ((config.input, manifest["input"]), (config.output, manifest["output"])):
            tensors.add(
                name=spec["name"],
                data_type=pb.DataType.Value(_TRITON_TYPES[spec["dtype"]]),
                dims=[d if isinstance(d, int) else -1 for d in spec["shape"][1:]],  # no batch axis
            )
        config.instance_group.add(count=int(instances), kind=pb.ModelInstanceGroup.Kind.Value(instance_kind))
    except (KeyError, ValueError) as error:  # a dtype Triton has no name for here, an unknown kind
        raise ExportError(f"cannot describe {name!r} to Triton: {error}") from None
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = int(max_queue_delay_us)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def config_text(
    name: str,
    platform: str,
    manifest: Mapping[str, Any],
    *,
    comments: tuple[str, ...] = (),
    **settings: Any,
) -> str:
    """config.pbtxt: `model_config(name, platform, manifest, **settings)` in protobuf text format, after
    `comments` (one `# ` line each: what the server's operator must know that the schema cannot say)."""
    text_format, _ = _protobuf()
    message = model_config(name, platform, manifest, **settings)
    return "".join(f"# {line}\n" for line in comments) + text_format.MessageToString(message)


def plan_notes(manifest: Mapping[str, Any], plan_entry: Mapping[str, Any]) -> list[str]:
    """What a Triton server needs to know about a plan that config.pbtxt cannot say (issue 16, item 7).

    Triton's TensorRT backend rejects a batch smaller than the engine profile's minimum (NOTES.md, from the
    issue-16 reading of tensorrt_backend), and only with `--backend-config=tensorrt,version-compatible=true`
    does it call `setEngineHostCodeAllowed(true)` on its runtime (tensorrt_backend src/loader.cc, README
    "Command-line Options"). It creates that runtime with `createInferRuntime` and never `loadRuntime`, so a
    plan built with EXCLUDE_LEAN_RUNTIME (recon's --lean) deserializes only under the builder's exact
    TensorRT version.
    """
    notes = []
    trt = plan_entry.get("tensorrt") or {}
    low = int((trt.get("profile") or manifest["batch"]).get("min", 1))  # the engine's own profile first
    if low > 1:
        notes.append(
            f"the engine's profile minimum batch is {low}: Triton's TensorRT backend rejects requests "
            f"(and dynamic batches) smaller than {low}; export with --batch 1:OPT:MAX to serve batch 1"
        )
    version = trt.get("version", "unknown")
    if trt.get("version_compatible"):
        exact = " exactly" if trt.get("lean_runtime_excluded", True) else " or newer (same major)"
        notes.append(
            "version-compatible plan: start tritonserver with --backend-config=tensorrt,"
            f"version-compatible=true; the server's TensorRT must be {version}{exact}"
        )
    else:
        notes.append(
            f"the plan runs only on TensorRT {version} and compute capability "
            f"{trt.get('compute_capability', 'unknown')}: pick the NGC Triton release that ships it"
        )
    return notes


def parse_config(text: str) -> Any:
    """Parse config.pbtxt with Triton's ModelConfig protobuf; ExportError (one line) if it does not parse."""
    text_format, model_config_pb2 = _protobuf()
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ExportError(f"generated Triton config does not parse: {error}") from None


def _write_model(
    repo: Path, name: str, text: str, files: Mapping[str, Path], force: bool, version: int | None = None
) -> Path:
    """REPO/name/{config.pbtxt, 1/<files>} (a file or a folder each), written beside and renamed in.
    With `version`, REPO/name/<version>/ is added beside the versions already there (see _add_version)."""
    parse_config(text)
    target = repo / name
    if version is not None and target.exists():
        return _add_version(target, text, files, version)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=repo))
    try:
        _copy_version(temp / str(version or 1), files)
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


def _copy_version(folder: Path, files: Mapping[str, Path]) -> None:
    folder.mkdir()
    for file_name, source in files.items():
        if source.is_dir():
            shutil.copytree(source, folder / file_name)
        else:
            shutil.copyfile(source, folder / file_name)


def _add_version(target: Path, text: str, files: Mapping[str, Path], version: int) -> Path:
    """REPO/name/<version>/ renamed in beside the others (which are not touched), then config.pbtxt
    replaced atomically (the same model, so the same config but for the new version's shapes). Triton's
    default version policy serves the newest version; a model folder's versions carry the same numbers
    (recon-export --version-of, runtime/versions.py)."""
    final = target / str(version)
    if final.exists():
        raise ExportError(f"{final} already exists: Triton versions are never replaced")
    temp = Path(tempfile.mkdtemp(prefix=f".{version}.partial-{os.getpid()}-", dir=target))
    try:
        _copy_version(temp / "v", files)
        (temp / "v").chmod(0o755)
        os.rename(temp / "v", final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    config = target / "config.pbtxt"
    (target / ".config.pbtxt.tmp").write_text(text)
    os.replace(target / ".config.pbtxt.tmp", config)
    return target


def write_triton_repository(
    repo: str | os.PathLike,
    artifact: str | os.PathLike,
    manifest: Mapping[str, Any],
    *,
    name: str | None = None,
    flavour: str = "both",
    onnx_precision: str = "fp32",
    instances: int = 1,
    max_queue_delay_us: int = 100,
    python_threads: int | None = None,
    force: bool = False,
    version: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Write the chosen flavour's models; return (model folders, notes for whoever starts the server).

    native: the ONNX model (and the TensorRT plan when the artifact has one); python: the artifact through
    recon.runtime in Triton's python backend; both: all of them. `version` (an artifact that is version N
    of a model folder): each model gets version folder N beside its others, instead of replacing 1/.
    """
    if flavour not in FLAVOURS:
        raise ExportError(f"unknown Triton flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    if instances < 1 or max_queue_delay_us < 0:
        raise ExportError("Triton instances must be >= 1 and the queue delay >= 0 microseconds")
    repo, artifact = Path(repo), Path(artifact)
    name = name or str(manifest["name"])
    files = manifest["files"]
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create the Triton repository {repo}: {error.strerror}") from None
    written: list[Path] = []
    notes: list[str] = []
    settings = {"instances": instances, "max_queue_delay_us": max_queue_delay_us}
    if flavour in ("native", "both"):
        onnx_files = [
            f for f, e in files.items() if e["kind"] == "onnx" and e.get("precision") == onnx_precision
        ]
        onnx_file = onnx_files[0] if onnx_files else None
        if onnx_file is None:
            raise ExportError(f"the artifact has no {onnx_precision} ONNX file for the Triton repository")
        onnx_config = config_text(name, "onnxruntime_onnx", manifest, instance_kind="KIND_AUTO", **settings)
        onnx_files = {"model.onnx": artifact / onnx_file}
        written.append(_write_model(repo, name, onnx_config, onnx_files, force, version))
        plan = next((f for f, e in files.items() if e["kind"] == "tensorrt"), None)
        if plan is not None:
            trt_name = f"{name}-trt"
            plan_lines = plan_notes(manifest, files[plan])
            trt_config = config_text(
                trt_name, "tensorrt_plan", manifest, instance_kind="KIND_GPU", comments=tuple(plan_lines),
                **settings,
            )  # fmt: skip
            plan_files = {"model.plan": artifact / plan}
            written.append(_write_model(repo, trt_name, trt_config, plan_files, force, version))
            notes += [f"{trt_name}: {line}" for line in plan_lines]
    if flavour in ("python", "both"):
        py_name = f"{name}-python"
        threads = str(python_threads or 0)  # 0: onnxruntime's default
        parameters = {"recon_backend": "auto", "recon_precision": "auto", "recon_threads": threads}
        py_config = config_text(
            py_name, "python", manifest, instance_kind="KIND_CPU", parameters=parameters, **settings
        )
        py_files = {"model.py": PYTHON_MODEL, "artifact": artifact}
        written.append(_write_model(repo, py_name, py_config, py_files, force, version))
    return written, notes
