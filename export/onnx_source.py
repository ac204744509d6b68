"""An already exported image-to-image ONNX graph as a network source: `recon-export --onnx FILE.onnx`.

The user's graph is probed through onnxruntime (the same probe as a torch network; the receptive field by
random images, a lower bound, since there is no positive twin of a graph), then composed with what recon puts
around a network: the FBP in front for CT and the pad to the multiple the graph needs (both exported from
torch as one "front" graph), the crop back behind it (Shape / Slice nodes). The rest of the export (FP16 with
the FBP kept FP32, INT8, parity, consistency, TensorRT, Triton) runs on the composed graph as on any other.

The parity reference is the same composition run in pieces: torch's FBP and pad, then onnxruntime on the
user's own file (`OnnxNetwork`), then the crop: the composed graph must equal its parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from recon.export.errors import ExportError

if TYPE_CHECKING:
    import onnx

    from recon.runtime.artifact.task_config import TaskConfig

USER_PREFIX = "net/"


class OnnxNetwork(nn.Module):
    """The user's graph run by onnxruntime inside a torch pipeline (the parity reference; never exported)."""

    def __init__(self, model: bytes, threads: int | None) -> None:
        super().__init__()
        from recon.runtime.backends.onnxruntime import new_session, session_options

        options = session_options(threads or 1)
        options.log_severity_level = 3  # the probe tries sizes the graph may refuse: an answer, not an error
        self.session = new_session(model, options)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.asarray(self.session.run(None, {self.input_name: batch})[0]))


def _dims(value: onnx.ValueInfoProto) -> list[Any]:
    return [
        d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in value.type.tensor_type.shape.dim
    ]


def read_user_graph(path: Path, opset: int) -> onnx.ModelProto:
    """The user's graph, checked (one 4-D float input and output, a batch axis that is not fixed) and
    converted to `opset`; ExportError naming what is wrong."""
    import onnx
    from onnx import version_converter

    if not Path(path).is_file():
        raise ExportError(f"--onnx {path}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # DecodeError, ValidationError, external data that is missing
        raise ExportError(f"--onnx {path}: not a valid ONNX model ({str(error).splitlines()[0]})") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ExportError(
            f"--onnx {path}: {len(inputs)} inputs and {len(model.graph.output)} outputs; recon needs one "
            "image in and one image out"
        )
    for value in (inputs[0], model.graph.output[0]):
        dims = _dims(value)
        if len(dims) != 4 or value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"--onnx {path}: {value.name} is not a float32 (B, C, H, W) tensor: {dims}")
    batch = _dims(inputs[0])[0]
    if isinstance(batch, int) and batch != 0:
        raise ExportError(
            f"--onnx {path}: the batch axis is fixed at {batch}; export the graph with a dynamic batch axis "
            "(torch.onnx.export(..., dynamic_shapes=...) or dynamic_axes={'input': {0: 'batch'}})"
        )
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current != opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as error:  # an op the converter cannot move between these opsets
            raise ExportError(
                f"--onnx {path}: cannot convert opset {current} to {opset} ({str(error).splitlines()[0]}); "
                f"pass --opset {current}"
            ) from None
    return model


class Front(nn.Module):
    """measurement → what the user's graph takes: the FBP (CT) and the pad to the graph's multiple."""

    def __init__(self, task_cfg: TaskConfig, multiple: int) -> None:
        super().__init__()
        from recon.training.physics import FBP
        from recon.training.tasks import CTTask, ct_operator

        self.fbp = FBP(ct_operator(task_cfg), task_cfg.filter) if isinstance(task_cfg, CTTask) else None
        self.multiple = multiple

    def forward(self, measurement: torch.Tensor) -> torch.Tensor:
        from recon.training.models.layers import pad_to_multiple

        image = self.fbp(measurement) if self.fbp is not None else measurement
        return pad_to_multiple(image, self.multiple)[0] if self.multiple > 1 else image


def compose(
    user: onnx.ModelProto,
    front: onnx.ModelProto | None,
    *,
    input_name: str,
    output_name: str,
    crop: int | str | None,
    output_side: int | None = None,
) -> onnx.ModelProto:
    """front → user → crop as one graph with recon's I/O names. `crop`: None (nothing was padded), "input"
    (back to the measurement's own H, W: deblur) or a side (CT's image size)."""
    import onnx
    from onnx import compose as onnx_compose
    from onnx import helper

    user = onnx_compose.add_prefix(user, USER_PREFIX)
    user_in = next(i.name for i in user.graph.input if i.name not in {t.name for t in user.graph.initializer})
    user_out = user.graph.output[0].name
    if front is not None:
        front_out = front.graph.output[0].name
        user.ir_version = front.ir_version = max(user.ir_version, front.ir_version)
        model = onnx_compose.merge_models(front, user, io_map=[(front_out, user_in)])
        source = front.graph.input[0].name
    else:
        model, source = user, user_in
    # merge_models lists each domain once per model: one entry per domain (onnxruntime's quantizer needs it)
    domains = {(o.domain or ""): o.version for o in model.opset_import}
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in domains.items())
    graph = model.graph
    result = user_out
    if crop is not None:
        ends = "recon/crop_ends"
        if isinstance(crop, int):
            graph.initializer.append(helper.make_tensor(ends, onnx.TensorProto.INT64, [2], [crop, crop]))
        else:
            graph.node.append(helper.make_node("Shape", [source], ["recon/input_shape"], name="recon/shape"))
            graph.initializer.append(helper.make_tensor("recon/two", onnx.TensorProto.INT64, [1], [2]))
            graph.initializer.append(helper.make_tensor("recon/four", onnx.TensorProto.INT64, [1], [4]))
            graph.node.append(helper.make_node(
                "Slice", ["recon/input_shape", "recon/two", "recon/four"], [ends], name="recon/hw"
            ))  # fmt: skip
        graph.initializer.append(helper.make_tensor("recon/zeros", onnx.TensorProto.INT64, [2], [0, 0]))
        graph.initializer.append(helper.make_tensor("recon/axes", onnx.TensorProto.INT64, [2], [2, 3]))
        graph.node.append(helper.make_node(
            "Slice", [user_out, "recon/zeros", ends, "recon/axes"], ["recon/cropped"], name="recon/crop"
        ))  # fmt: skip
        result = "recon/cropped"
    # recon's names for the graph's input and output
    renames = {source: input_name, result: output_name}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in graph.input:
        if value.name == source:
            value.name = input_name
            for dim, name in zip(
                value.type.tensor_type.shape.dim, ("batch", None, "height", "width"), strict=False
            ):
                if name is not None and not dim.HasField("dim_value"):
                    dim.dim_param = name
    out_type = graph.output[0].type
    del graph.output[:]
    graph.output.append(helper.make_value_info(output_name, out_type))
    dims = graph.output[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", None, "height", "width"), strict=False):
        if name in ("height", "width") and output_side is not None:
            dim.dim_value = output_side  # CT: the image size is the geometry's
        elif name is not None and not dim.HasField("dim_value"):
            dim.dim_param = name
    return model


def load_onnx_source(options: Any) -> tuple[Any, TaskConfig, dict[str, Any]]:
    """(reference network: the user's graph in onnxruntime, padded as probed; deployed task; provenance)."""
    from recon.export.exporter import deployed_task_config
    from recon.export.network_source import padded_network
    from recon.runtime.io.files import sha256_of

    path = Path(options.onnx)
    user = read_user_graph(path, options.opset)
    declared = _dims(
        next(i for i in user.graph.input if i.name not in {t.name for t in user.graph.initializer})
    )
    _, deployed = deployed_task_config(options, {})
    try:
        network = OnnxNetwork(user.SerializeToString(), options.threads)
    except Exception as error:  # onnxruntime cannot load it (an op it lacks, a bad shape)
        raise ExportError(
            f"--onnx {path}: onnxruntime cannot load it ({str(error).splitlines()[0]})"
        ) from None

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(batch)).numpy()

    def padded(multiple: int) -> Any:
        wrapped = padded_network(network, multiple)
        return lambda batch: wrapped(torch.from_numpy(batch)).numpy()

    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # sizes the graph refuses are the probe's answers, not errors
    try:
        probe = _probe(run, padded, deployed, declared, options.seed)
    finally:
        onnxruntime.set_default_logger_severity(2)
    probe.field_method = "random images through onnxruntime (a lower bound: no positive twin of a graph)"
    config = {
        "name": options.name(),
        "source": "onnx",
        "file": path.name,
        "sha256": sha256_of(path),
        "opset": options.opset,
        "pad_multiple": probe.multiple_of,
    }
    source = {
        "kind": "onnx",
        "weights_sha256": config["sha256"],
        "config": config,
        "probe": probe.to_json(),
        "trained_task_config": None,
        "user_graph": user,
    }
    return padded_network(network, probe.multiple_of).eval(), deployed, source


def _probe(run: Any, padded: Any, deployed: TaskConfig, declared: list[Any], seed: int) -> Any:
    from recon.export.network_source import PROBE_IMAGES, network_inputs
    from recon.export.probe import probe_network

    return probe_network(
        run,
        image_size=deployed.image_size,
        network_inputs=network_inputs(deployed, PROBE_IMAGES, seed + 11),
        declared_channels=declared[1] if isinstance(declared[1], int) and declared[1] > 0 else None,
        padded=padded,
        seed=seed,
    )


def composed_graph(run: Any, path: Path) -> Any:
    """Write the composed FP32 graph to `path` (front exported from torch, then the user's graph, then the
    crop); returns export_onnx's OnnxExportInfo for it."""
    import onnx

    from recon.export.exporter import INPUT_NAME, OUTPUT_NAME
    from recon.export.onnx_export import OnnxExportInfo, count_op_types, export_onnx

    options, task_cfg = run.options, run.task_cfg
    multiple = int(run.source["config"]["pad_multiple"])
    ct = task_cfg.task == "ct"
    front_model = None
    dynamic = run.spatial is not None and run.spatial.whole_image
    if ct or multiple > 1:
        front_path = path.with_name("front.onnx")
        export_onnx(
            Front(task_cfg, multiple).eval(),
            run.example,
            front_path,
            input_name=INPUT_NAME,
            output_name="recon/front",
            batch_max=options.batch[2],
            opset=options.opset,
            spatial=(run.spatial.min, run.spatial.max) if dynamic else None,
        )
        front_model = onnx.load(str(front_path))
        front_path.unlink()
    crop = None if multiple == 1 else (task_cfg.image_size if ct else "input")
    model = compose(
        run.source["user_graph"],
        front_model,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        crop=crop,
        output_side=task_cfg.image_size if ct else None,
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:
        raise ExportError(f"the composed graph fails onnx.checker: {str(error).splitlines()[0]}") from None
    onnx.save(model, str(path))

    return OnnxExportInfo(
        path=path,
        opset=options.opset,
        op_types=count_op_types(model),
        num_nodes=len(model.graph.node),
        input_shape=_dims(next(v for v in model.graph.input if v.name == INPUT_NAME)),
        output_shape=_dims(model.graph.output[0]),
        spatial=(run.spatial.min, run.spatial.max) if dynamic else None,
    )
