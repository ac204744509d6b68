"""torch module → single-file ONNX with a symbolic batch axis, checked (torch 2.13 dynamo exporter).

Why the defaults:
- opset 18: TensorRT's parser reads it fully; GridSample at opset ≥ 20 is named "linear", which TensorRT's
  parser does not know and silently runs as nearest, so a graph holding GridSample is refused above 19.
- `external_data=False`: one self-contained file whose sha256 the manifest can list.
- `torch.onnx.export(verify=True)` only warns, so the file is checked here with `full_check=True` and the
  numbers are compared by `recon.export.parity`.

Dynamic height and width (`spatial=(min, max)`, fully convolutional models): `torch.onnx.export` with
`dynamic_shapes` silently falls back to the example's size when the model specialises a dimension (checked:
torch 2.13 gives a 256×256 graph without a word), so the program comes from `torch.export.export` first,
which fails loudly, then goes to `torch.onnx.export` (which accepts an ExportedProgram). The models' internal
pad-to-multiple (`training/models/layers.py`) is written so that its sizes stay symbolic, but torch's
symbolic reasoning cannot prove facts such as 16·ceil(h/16) <= h + 15 over the whole range;
`prefer_deferred_runtime_asserts_over_guards=True` turns those into runtime asserts (which the ONNX
translation drops) instead of refusing the export. That is why the exporter re-checks the ONNX graph against
torch at several sizes, non-square and not multiples of 16 (`exporter.check_spatial_parity`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recon.export.errors import ExportError

if TYPE_CHECKING:  # heavy imports stay lazy
    import onnx
    import torch

DEFAULT_OPSET = 18
MAX_OPSET_WITH_GRIDSAMPLE = 19


@dataclass
class OnnxExportInfo:
    path: Path
    opset: int
    op_types: dict[str, int]
    num_nodes: int
    input_shape: list[Any]
    output_shape: list[Any]
    spatial: tuple[int, int] | None = None  # (min, max) side of a dynamic H, W export

    def to_json(self) -> dict[str, Any]:
        return {
            "opset": self.opset,
            "num_nodes": self.num_nodes,
            "op_types": self.op_types,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "dynamic_spatial": self.spatial is not None,
        }


def _shape_of(value_info: onnx.ValueInfoProto) -> list[Any]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in dims]


def count_op_types(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress on stdout (which `--json` owns) and logs registry warnings; hush both."""
    loggers = [
        logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    input_name: str = "measurement",
    output_name: str = "image",
    batch_max: int = 32,
    opset: int = DEFAULT_OPSET,
    spatial: tuple[int, int] | None = None,
) -> OnnxExportInfo:
    """Export `module` (already in eval mode) at FP32 with a dynamic batch axis; check the file; return facts.

    `example` is a (B, 1, H, W) float32 measurement; use B ≥ 2 so that torch.export does not specialise the
    batch axis to 1. With `spatial=(min, max)` H and W are symbolic too (named "height" and "width"), each
    within [min, max]; the export fails rather than fixing them to the example's size.
    """
    import onnx

    path = Path(path)
    if module.training:
        raise ExportError(
            "internal: export_onnx() needs a module in eval() mode (dropout/batch-norm would differ)"
        )
    if example.shape[0] < 2:
        raise ExportError(
            "internal: export_onnx() needs an example batch of at least 2 to keep the batch symbolic"
        )
    _write_onnx(module, example, path, input_name, output_name, batch_max, opset, spatial)
    model = onnx.load(str(path))
    if spatial is not None:
        _name_io_dims(model, ("batch", None, "height", "width"))
        onnx.save(model, str(path))
    return check_exported(model, path, opset, spatial)


def _write_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_name: str,
    batch_max: int,
    opset: int,
    spatial: tuple[int, int] | None,
) -> None:
    """The torch side: the dynamo exporter (through `torch.export` first for symbolic H, W) to `path`."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=max(int(batch_max), 2))
    dims: dict[int, Any] = {0: batch}
    source: Any = module
    with _quiet_exporter(), torch.no_grad():
        if spatial is not None:
            lo, hi = int(spatial[0]), int(spatial[1])
            if not (2 <= lo <= min(example.shape[-2:]) and max(example.shape[-2:]) <= hi):
                raise ExportError(
                    f"internal: the example {tuple(example.shape)} lies outside the spatial range {lo}..{hi}"
                )
            dims = {
                0: batch,
                2: torch.export.Dim("height", min=lo, max=hi),
                3: torch.export.Dim("width", min=lo, max=hi),
            }
            source = _spatial_program(module, example, dims)
        try:
            program = torch.onnx.export(
                source,
                (example,),
                dynamo=True,
                dynamic_shapes=None if spatial is not None else (dims,),
                input_names=[input_name],
                output_names=[output_name],
                opset_version=opset,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        except Exception as error:  # the exporter raises many types; one line with the first cause
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"torch.onnx.export failed: {first_line}") from None
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(path), external_data=False)


def check_exported(
    model: onnx.ModelProto, path: Path, opset: int, spatial: tuple[int, int] | None = None
) -> OnnxExportInfo:
    """The ONNX side: onnx.checker (full), GridSample's opset, one input and one output, symbolic axes."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path.name} fails onnx.checker: {str(error).splitlines()[0]}") from None
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    op_types = count_op_types(model)
    if "GridSample" in op_types and opset_used > MAX_OPSET_WITH_GRIDSAMPLE:
        raise ExportError(
            f"the graph holds GridSample at opset {opset_used}: TensorRT reads its mode 'linear' as nearest; "
            f"export with --opset {MAX_OPSET_WITH_GRIDSAMPLE} or lower"
        )
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ExportError(
            f"expected one input and one output, the graph has {len(model.graph.input)} and "
            f"{len(model.graph.output)}"
        )
    input_shape = _shape_of(model.graph.input[0])
    output_shape = _shape_of(model.graph.output[0])
    if not isinstance(input_shape[0], str) or not isinstance(output_shape[0], str):
        raise ExportError(
            f"the batch axis was not exported as symbolic: input {input_shape}, output {output_shape}"
        )
    if spatial is not None and not all(isinstance(d, str) for d in input_shape[2:] + output_shape[2:]):
        raise ExportError(
            f"height and width were not exported as symbolic: input {input_shape}, output {output_shape}; "
            "the model fixes its size somewhere (int() of a shape, a size-dependent branch)"
        )
    return OnnxExportInfo(
        path=path,
        opset=opset_used,
        op_types=op_types,
        num_nodes=len(model.graph.node),
        input_shape=input_shape,
        output_shape=output_shape,
        spatial=spatial,
    )


def _spatial_program(module: torch.nn.Module, example: torch.Tensor, dims: dict[int, Any]) -> Any:
    """torch.export with symbolic batch, H, W; one clear line when the model fixes a size."""
    import torch

    try:
        # strict=False is what torch.onnx.export uses itself; see the module docstring for the asserts
        return torch.export.export(
            module,
            (example,),
            dynamic_shapes=(dims,),
            strict=False,
            prefer_deferred_runtime_asserts_over_guards=True,
        )
    except Exception as error:  # torch.export raises UserError / ConstraintViolationError and more
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[:2]) if lines else type(error).__name__
        raise ExportError(
            f"cannot export {type(module).__name__} with dynamic height/width: {detail}"
        ) from None


def _name_io_dims(model: onnx.ModelProto, names: tuple[str | None, ...]) -> None:
    """Rename the graph's symbolic I/O dims (torch.export calls them s0, s53, ...) to readable names."""
    renames: dict[str, str] = {}
    for value in [*model.graph.input, *model.graph.output]:
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=False):
            if name is not None and dim.HasField("dim_param"):
                renames.setdefault(dim.dim_param, name)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
