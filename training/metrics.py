"""Image-quality metrics, defined exactly as the course defines them.

- PSNR = 10·log10(1 / MSE), the estimate clamped to [0, 1] first (images live in [0, 1], so the peak is 1).
- SSIM = scikit-image's ``structural_similarity`` defaults for data_range=1: a 7×7 *uniform* window, the
  sample covariance (N/(N-1) with N=49), K1=0.01, K2=0.03, averaged over the pixels whose window lies fully
  inside the image (skimage crops (7-1)//2 = 3 pixels per border before averaging). torchmetrics' default
  SSIM (11×11 Gaussian window) gives other numbers; recon uses this one everywhere.
- RE = ‖x̂ − x‖₂ / ‖x‖₂ (relative error, no clamping).

All functions take (B, 1, H, W) or (B, H, W) tensors and return one value per image, shape (B,). SSIM is
differentiable, so `losses.py` reuses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 7
_K1, _K2 = 0.01, 0.03


def _as_bchw(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 2:
        return x[None, None]
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        return x
    raise ValueError(f"expected an image batch (B,1,H,W), (B,H,W) or (H,W); got shape {tuple(x.shape)}")


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM of estimate ``x`` against reference ``y``, equal to skimage's default within ~1e-6.

    Averaged over channels when C > 1. The images must be at least 7×7.
    """
    x, y = _as_bchw(x), _as_bchw(y)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW}")
    # A valid (unpadded) 7×7 mean is exactly skimage's uniform filter evaluated on the cropped region.
    mean = lambda t: F.avg_pool2d(t, SSIM_WINDOW, stride=1)  # noqa: E731
    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with peak 1, after clamping the estimate to [0, 1]."""
    x, y = _as_bchw(x), _as_bchw(y)
    mse = (x.clamp(0, 1) - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def relative_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image relative error ‖x − y‖ / ‖y‖."""
    x, y = _as_bchw(x), _as_bchw(y)
    return (x - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1).clamp_min(1e-12)


@torch.no_grad()
def image_metrics(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM / RE over a batch, computed in float64 on the clamped estimate (SSIM, PSNR)."""
    x, y = _as_bchw(x).double(), _as_bchw(y).double()
    xc = x.clamp(0, 1)
    return {
        "psnr": float(psnr(x, y).mean()),
        "ssim": float(ssim(xc, y).mean()),
        "re": float(relative_error(x, y).mean()),
    }
