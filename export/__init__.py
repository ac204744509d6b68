"""recon's export: a trained network → an artifact directory (ONNX, FP16 ONNX, INT8 ONNX, TensorRT plan).

>>> from recon.export import ExportOptions, export_artifact
>>> summary = export_artifact(ExportOptions(model="resunet", task="ct", fp16=True, out="art/resunet-ct"))

Importing this package is cheap: torch, onnx, onnxruntime and TensorRT load only when a step needs them.
"""

from __future__ import annotations

from recon.export.errors import ExportError
from recon.export.exporter import ExportOptions, export_artifact
from recon.export.parity import Tolerance

__all__ = ["ExportError", "ExportOptions", "Tolerance", "export_artifact"]
