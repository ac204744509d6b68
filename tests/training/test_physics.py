"""Specifications of the forward operators: adjointness, kernels, noise, scikit-image cross-checks, ONNX."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.training.physics import (
    FBP,
    Blur,
    ParallelBeamCT,
    add_relative_noise,
    default_n_detectors,
    gaussian_kernel,
    motion_kernel,
    physics_from_config,
)

OPERATORS = {
    "blur-motion-centred": lambda: Blur(kind="motion", kernel_size=7, angle=45.0),
    "blur-motion-course": lambda: Blur(kind="motion", kernel_size=9, angle=20.0, motion_style="course"),
    "blur-gaussian": lambda: Blur(kind="gaussian", kernel_size=5, variance=2.0),
    "blur-user-even-kernel": lambda: Blur(torch.rand(4, 5)),
    "ct-default-detector": lambda: ParallelBeamCT(24, 7),
    "ct-narrow-detector-half-turn": lambda: ParallelBeamCT(21, 5, n_detectors=17, angle_range=math.pi / 2),
}


def _image_shape(op) -> tuple[int, int, int, int]:
    n = op.image_size if isinstance(op, ParallelBeamCT) else 23
    return (3, 1, n, n)


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adjoint_satisfies_the_inner_product_identity(name, dtype):
    op = OPERATORS[name]()
    x = torch.randn(_image_shape(op), dtype=dtype)
    error = op.adjointness_error(x, torch.Generator().manual_seed(0))
    assert error <= (1e-5 if dtype == torch.float64 else 1e-4), error


def test_the_adjointness_check_catches_a_transpose_that_is_off_by_a_pixel():
    class Shifted(Blur):  # a plausible bug: the adjoint's crop one pixel off
        def A_adjoint(self, y):
            return torch.roll(super().A_adjoint(y), 1, dims=-1)

    x = torch.randn(2, 1, 23, 23, dtype=torch.float64)
    assert Shifted(kind="gaussian", kernel_size=5, variance=2.0).adjointness_error(x) > 1e-3


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operator_rebuilds_from_its_config(name):
    op = OPERATORS[name]()
    rebuilt = physics_from_config(op.to_config())
    x = torch.randn(_image_shape(op))
    torch.testing.assert_close(rebuilt.A(x), op.A(x))


def test_course_motion_kernel_has_six_taps_on_the_diagonal_from_the_corner():
    k = motion_kernel(7, 45.0, style="course")
    taps = {tuple(p) for p in torch.nonzero(k).tolist()}
    assert taps == {(i, i) for i in range(6)}
    assert k.sum().item() == pytest.approx(1.0)


def test_centred_motion_kernel_is_a_symmetric_line_through_the_centre():
    k = motion_kernel(7, 45.0)
    assert {tuple(p) for p in torch.nonzero(k).tolist()} == {(i, i) for i in range(7)}
    torch.testing.assert_close(k, torch.flip(k, (0, 1)))
    horizontal = motion_kernel(5, 0.0)
    assert torch.nonzero(horizontal)[:, 0].unique().tolist() == [2]
    assert k.sum().item() == pytest.approx(1.0)


def test_gaussian_kernel_is_normalised_with_the_requested_variance():
    k = gaussian_kernel(21, 4.0).double()
    r = torch.arange(21, dtype=torch.float64) - 10
    assert k.sum().item() == pytest.approx(1.0)
    assert (k.sum(0) * r**2).sum().item() == pytest.approx(4.0, rel=1e-3)


def test_blur_keeps_the_image_shape_and_a_constant_image_inside():
    x = torch.ones(2, 1, 16, 17)
    for op in (Blur(), Blur(torch.full((4, 6), 1 / 24)), Blur(kind="gaussian", kernel_size=3)):
        y = op.A(x)
        assert y.shape == x.shape
        torch.testing.assert_close(y[..., 5:-5, 5:-5], torch.ones_like(y[..., 5:-5, 5:-5]))


def test_relative_noise_has_the_requested_norm_per_sample():
    y = torch.randn(4, 1, 32, 32) * torch.tensor([0.1, 1.0, 10.0, 100.0]).view(4, 1, 1, 1)
    noisy = add_relative_noise(y, 0.05)
    ratio = (noisy - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full((4,), 0.05), rtol=1e-5, atol=0)


def test_calling_an_operator_simulates_its_noise_model_on_a_noiseless_a():
    from recon.training.physics.noise import RelativeGaussianNoise

    op = Blur(kind="gaussian", kernel_size=5, variance=2.0, noise_model=RelativeGaussianNoise(0.05))
    x = torch.rand(3, 1, 24, 24)
    clean, noisy = op.A(x), op(x, torch.Generator().manual_seed(3))
    ratio = (noisy - clean).flatten(1).norm(dim=1) / clean.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full((3,), 0.05), rtol=1e-5, atol=0)
    torch.testing.assert_close(op(x, torch.Generator().manual_seed(3)), noisy, rtol=0, atol=0)
    assert torch.equal(Blur()(x), Blur().A(x))  # no noise model: no noise


def test_the_network_sees_the_blurred_image_and_the_fbp_of_a_sinogram():
    blur, ct = Blur(), ParallelBeamCT(24, 7)
    y = torch.rand(1, 1, 24, 24)
    assert blur.network_input(y) is y
    sinogram = ct.A(y)
    torch.testing.assert_close(ct.network_input(sinogram), ct.fbp(sinogram), rtol=0, atol=0)
    assert ct.network_input(sinogram).shape == y.shape
    with pytest.raises(NotImplementedError, match="Blur has no pseudo-inverse"):
        blur.A_dagger(y)
    assert (blur.network_input_name, ct.network_input_name) == ("blurred input", "FBP")  # baseline rows


def test_relative_noise_is_reproducible_with_a_seeded_generator():
    y = torch.randn(2, 1, 8, 8)
    a = add_relative_noise(y, 0.1, torch.Generator().manual_seed(7))
    b = add_relative_noise(y, 0.1, torch.Generator().manual_seed(7))
    c = add_relative_noise(y, 0.1, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_default_detector_covers_the_image_diagonal():
    assert default_n_detectors(256) == 363
    ct = ParallelBeamCT(256, 60)
    assert ct.A(torch.zeros(1, 1, 256, 256)).shape == (1, 1, 60, 363)


def test_ct_rejects_a_sinogram_of_the_wrong_geometry():
    with pytest.raises(ValueError, match="sinogram must have shape"):
        ParallelBeamCT(32, 10).A_adjoint(torch.zeros(1, 1, 11, 46))


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operators_create_no_tensor_off_the_input_device(name):
    # the meta device refuses to mix with CPU tensors, so a stray CPU constant fails here
    op = OPERATORS[name]().to("meta")
    x = torch.zeros(_image_shape(op), device="meta")
    y = op.A(x)
    assert y.device.type == op.A_adjoint(y).device.type == "meta"
    if isinstance(op, ParallelBeamCT):
        assert op.A_dagger(y).device.type == "meta"
        assert add_relative_noise(y, 0.1, torch.Generator().manual_seed(0)).device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ct_on_cuda_matches_cpu():
    ct = ParallelBeamCT(64, 30)
    x = torch.rand(2, 1, 64, 64)
    y = ct.A(x)
    torch.testing.assert_close(ct.A(x.cuda()).cpu(), y, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ct.A_adjoint(y.cuda()).cpu(), ct.A_adjoint(y), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ct.A_dagger(y.cuda()).cpu(), ct.A_dagger(y), rtol=1e-4, atol=1e-4)


# --- scikit-image cross-checks on Shepp-Logan 256² -------------------------------------------------

skimage_transform = pytest.importorskip("skimage.transform")


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    from skimage.data import shepp_logan_phantom

    return skimage_transform.resize(shepp_logan_phantom(), (256, 256), anti_aliasing=True)


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(x, 0, 1) - ref) ** 2)))


def _degrees(n_angles: int) -> np.ndarray:
    return np.arange(n_angles) * 180.0 / n_angles


def _to_torch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).float()[None, None]


def test_radon_matches_scikit_image_within_two_percent(phantom):
    ct = ParallelBeamCT(256, 60)
    ours = ct.A(_to_torch(phantom))[0, 0].double().numpy().T  # scikit-image: (detectors, angles)
    ref = skimage_transform.radon(phantom, _degrees(60), circle=False)
    assert ours.shape == ref.shape
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 0.02


@pytest.mark.parametrize("n_angles", [60, 180])
def test_fbp_psnr_matches_scikit_image_iradon(phantom, n_angles):
    ct = ParallelBeamCT(256, n_angles)
    with torch.no_grad():
        ours = ct.A_dagger(ct.A(_to_torch(phantom)))[0, 0].double().numpy()
    sinogram = skimage_transform.radon(phantom, _degrees(n_angles), circle=False)
    ref = skimage_transform.iradon(sinogram, _degrees(n_angles), output_size=256, circle=False)
    assert abs(_psnr(ours, phantom) - _psnr(ref, phantom)) <= 0.3
    assert _psnr(ours, phantom) >= (30.0 if n_angles == 180 else 25.0)


@pytest.mark.parametrize(
    ("ours", "theirs"), [("ram-lak", "ramp"), ("shepp-logan", "shepp-logan"), ("hann", "hann")]
)
def test_fbp_filters_reproduce_iradon(phantom, ours, theirs):
    sinogram = skimage_transform.radon(phantom, _degrees(30), circle=False)
    ref = skimage_transform.iradon(sinogram, _degrees(30), output_size=256, circle=False, filter_name=theirs)
    ct = ParallelBeamCT(256, 30)
    got = FBP(ct, ours)(torch.from_numpy(sinogram.T.copy())[None, None])[0, 0].numpy()
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()


def test_fbp_stays_float32_inside_a_half_model():
    fbp = FBP(ParallelBeamCT(16, 4)).half()
    assert fbp.filter_matrix.dtype == torch.float32
    assert fbp(torch.randn(1, 1, 4, 23).half()).dtype == torch.float32


def test_fbp_exported_to_onnx_matches_torch_at_batch_1_and_3(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fbp = FBP(ParallelBeamCT(256, 60)).eval()
    path = tmp_path / "fbp.onnx"
    torch.onnx.export(
        fbp,
        (torch.randn(2, 1, 60, 363),),
        str(path),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )
    assert path.stat().st_size < 4e6  # coordinates are computed in-graph, not stored
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        y = torch.randn(batch, 1, 60, 363)
        with torch.no_grad():
            expected = fbp(y).numpy()
        got = session.run(None, {name: y.numpy()})[0]
        assert got.shape == (batch, 1, 256, 256)
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
