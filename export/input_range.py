"""The input value range an artifact records, so that the runtime refuses far-off inputs.

Deblur: images in [0, 1]. CT: the sinograms of every image the network was trained on (values in [0, 1]) lie
between 0 and the longest chord through the image grid, A(1) at its maximum (≈ √2·N for unit pixels; the
geometry decides, so it is computed with the task's own operator), widened by the measurement noise: the
relative noise ‖e‖ = level·‖y‖ has a per-entry deviation of at most level·max(y), and 6 of those cover
every draw in practice. The runtime refuses inputs more than one range-width outside (inputs.prepare_batch):
a float sinogram ×1000 or a ×100 fixed-point one, which would otherwise give saturated or black images.
"""

from __future__ import annotations

import torch

from recon.runtime.artifact.task_config import CTTask, TaskConfig

NOISE_DEVIATIONS = 6.0


def input_value_range(task_cfg: TaskConfig) -> list[float]:
    """[low, high] of the measurements `task_cfg` produces from images in [0, 1]."""
    if not isinstance(task_cfg, CTTask):
        return [0.0, 1.0]
    from recon.training.tasks import ct_operator

    ones = torch.ones(1, 1, task_cfg.image_size, task_cfg.image_size, dtype=torch.float64)
    with torch.no_grad():
        longest = float(ct_operator(task_cfg).A(ones).max())
    margin = NOISE_DEVIATIONS * task_cfg.noise_level * longest
    return [-margin, longest + margin]
