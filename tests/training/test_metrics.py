"""Metrics follow the course: skimage SSIM (7×7 uniform, sample covariance), PSNR after clamping, RE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from recon.training.losses import parse_loss
from recon.training.metrics import image_metrics, psnr, relative_error, ssim


@pytest.mark.parametrize("shape", [(64, 64), (37, 80)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_matches_skimage(shape, dtype):
    rng = np.random.default_rng(0)
    ref = rng.random(shape)
    est = np.clip(ref + 0.1 * rng.standard_normal(shape), 0, 1)
    expected = structural_similarity(est, ref, data_range=1.0)
    got = ssim(torch.tensor(est, dtype=dtype), torch.tensor(ref, dtype=dtype))
    assert got.shape == (1,)
    assert float(got) == pytest.approx(expected, abs=1e-4)


def test_ssim_is_per_image_and_differentiable():
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    s = ssim(x, torch.rand(3, 1, 32, 32))
    assert s.shape == (3,)
    s.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(ssim(x.detach(), x.detach()).min()) == pytest.approx(1.0)


def test_psnr_clamps_the_estimate_and_re_does_not():
    y = torch.full((1, 1, 8, 8), 0.5)
    x = y + 0.1
    assert float(psnr(x, y)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert float(psnr(torch.full_like(y, 5.0), torch.ones_like(y))) > 100  # clamped to 1: exact
    assert float(relative_error(x, y)) == pytest.approx(0.2, abs=1e-6)
    m = image_metrics(x, y)
    assert set(m) == {"psnr", "ssim", "re"}


def test_loss_specs():
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    mix = parse_loss("0.8*l1+0.2*ssim")
    assert mix.spec == "0.8*l1+0.2*ssim"
    expected = 0.8 * (x - y).abs().mean() + 0.2 * (1 - ssim(x, y).mean())
    assert float(mix(x, y)) == pytest.approx(float(expected), rel=1e-6)
    assert float(parse_loss("mse")(x, y)) == pytest.approx(float(((x - y) ** 2).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="bad loss term"):
        parse_loss("0.5*huber")
