"""bf16 at export: what running the FP32 graph in bf16 (OpenVINO, CPUs with AVX512_BF16 or AMX) costs in
held-out PSNR, measured through the runtime on the artifact being written and recorded in its report.

bf16 is a runtime precision of `model.onnx`, not a file: the artifact is the same; the report says what
`precision="bf16"` loses on the held-out set (half phantoms, half crops of images never trained on), so that
a deployment can choose it knowingly. Where OpenVINO or bf16 is missing the report says why nothing was
measured; the export does not fail for it.
"""

from __future__ import annotations

import os
from typing import Any

HELDOUT_IMAGES = 32


def _psnr(image: Any, target: Any) -> float:
    import numpy as np

    mse = float(np.mean((np.clip(image, 0, 1) - target) ** 2))
    return 10 * float(np.log10(1.0 / max(mse, 1e-12)))


def bf16_heldout_loss(
    artifact: str | os.PathLike,
    task_cfg: Any,
    *,
    images: int = HELDOUT_IMAGES,
    threads: int | None = None,
) -> dict[str, Any]:
    """Mean held-out PSNR of the artifact's FP32 graph on OpenVINO in f32 and in bf16, and the loss (dB)."""
    import numpy as np

    from recon.runtime.backends.openvino import bf16_refusal_here, import_openvino, openvino_available
    from recon.runtime.reconstructor import Reconstructor
    from recon.training.data import heldout_set

    if not openvino_available():
        return {"measured": False, "reason": "OpenVINO is not installed (pip install recon[openvino])"}
    why = bf16_refusal_here()
    if why is not None:
        return {"measured": False, "reason": why}
    heldout = heldout_set(task_cfg, n=images, size=task_cfg.image_size)  # a TaskConfig
    measurements, targets = heldout.measurements.numpy(), heldout.targets.numpy()
    outputs = {}
    for precision in ("fp32", "bf16"):
        with Reconstructor.from_artifact(
            artifact, backend="openvino", precision=precision, threads=threads
        ) as rec:
            outputs[precision] = rec.run(measurements)
    psnr = {
        p: float(np.mean([_psnr(a, b) for a, b in zip(out, targets, strict=True)]))
        for p, out in outputs.items()
    }
    return {
        "measured": True,
        "engine": f"openvino {import_openvino().__version__}",
        "images": len(targets),
        "psnr_fp32": round(psnr["fp32"], 3),
        "psnr_bf16": round(psnr["bf16"], 3),
        "loss_db": round(psnr["fp32"] - psnr["bf16"], 3),
        "max_abs_vs_fp32": float(np.abs(outputs["bf16"] - outputs["fp32"]).max()),
    }
