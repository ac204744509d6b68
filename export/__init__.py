"""recon's export: a trained network → an artifact directory (ONNX, FP16 ONNX, INT8 ONNX, TensorRT plan).

>>> from recon.export import ExportOptions, export_artifact
>>> summary = export_artifact(ExportOptions(model="resunet", task="ct", fp16=True, out="art/resunet-ct"))
>>> summary = export_network(my_module, task=CTTask(image_size=256), out="art/mine-ct", fp16=True, int8=True)

Importing this package is cheap: torch, onnx, onnxruntime and TensorRT load only when a step needs them.
"""

from __future__ import annotations

from recon.export.errors import ExportError
from recon.export.exporter import ExportOptions, export_artifact
from recon.export.network_source import export_network
from recon.export.parity import Tolerance
from recon.runtime.artifact.task_config import CTTask, DeblurTask

__all__ = [
    "CTTask",
    "DeblurTask",
    "ExportError",
    "ExportOptions",
    "Tolerance",
    "export_artifact",
    "export_network",
]
