"""Reconstructor.run: numerics against numpy, input forms, batch splitting, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from runtime_artifacts import (
    ANGLES,
    DETECTORS,
    MAX_BATCH,
    H,
    N,
    W,
    build_artifact,
    conv_reference,
    ct_reference,
)

from recon.runtime import Reconstructor


def expected(x: np.ndarray) -> np.ndarray:
    return np.clip(conv_reference(x), 0.0, 1.0)


def test_output_matches_the_numpy_convolution(deblur):
    x = np.random.default_rng(1).random((3, 1, H, W), dtype=np.float32)
    y = deblur.run(x)
    assert y.dtype == np.float32 and y.shape == (3, 1, H, W)
    np.testing.assert_allclose(y, expected(x), atol=1e-5)


@pytest.mark.parametrize("shape", [(H, W), (5, H, W), (5, 1, H, W)])
def test_output_has_the_rank_of_the_input(deblur, shape):
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    y = deblur.run(x)
    assert y.shape == shape
    np.testing.assert_allclose(y.reshape(-1, 1, H, W), expected(x.reshape(-1, 1, H, W)), atol=1e-5)


def test_a_batch_larger_than_the_profile_is_split_and_reassembled(deblur):
    x = np.random.default_rng(3).random((2 * MAX_BATCH + 1, 1, H, W), dtype=np.float32)
    whole = deblur.run(x)
    one_by_one = np.concatenate([deblur.run(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_allclose(whole, expected(x), atol=1e-5)


def test_a_batch_below_the_profile_minimum_is_padded(tmp_path, cpu_backend):
    artifact = build_artifact(tmp_path / "a", min_batch=4, max_batch=4)
    x = np.random.default_rng(4).random((6, 1, H, W), dtype=np.float32)
    with Reconstructor.from_artifact(artifact, backend=cpu_backend, threads=1) as rec:
        np.testing.assert_allclose(rec.run(x), expected(x), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_images_are_scaled_by_their_dtype_maximum(deblur, dtype):
    top = np.iinfo(dtype).max
    x = np.random.default_rng(5).integers(0, top, (2, H, W), dtype=dtype)
    np.testing.assert_allclose(deblur.run(x)[:, None], expected(x[:, None] / top), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ">f4"])
def test_other_float_types_are_converted(deblur, dtype):
    x = np.random.default_rng(6).random((2, H, W)).astype(dtype)
    np.testing.assert_allclose(deblur.run(x)[:, None], expected(x.astype(np.float64)[:, None]), atol=1e-3)


def test_non_contiguous_and_negative_stride_inputs_are_handled(deblur):
    base = np.random.default_rng(7).random((4, H, 2 * W), dtype=np.float32)
    for x in (base[:, :, ::2], base[::-1, :, :W], base[:, :, :W].transpose(0, 2, 1)):
        np.testing.assert_allclose(deblur.run(x)[:, None], expected(np.array(x)[:, None]), atol=1e-5)


def test_nan_and_inf_are_refused(deblur):
    x = np.zeros((2, H, W), np.float32)
    x[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        deblur.run(x)
    x[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        deblur.run(x)


def test_a_wrong_shape_error_names_the_expected_shape(deblur):
    with pytest.raises(ValueError, match=rf"expected \(B, {H}, {W}\)"):
        deblur.run(np.zeros((2, H + 1, W), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 16, 16\)"):
        deblur.run(np.zeros((2, 3, H, W), np.float32))


def test_booleans_empty_batches_and_strings_are_refused(deblur):
    with pytest.raises(ValueError, match="boolean"):
        deblur.run(np.zeros((H, W), bool))
    with pytest.raises(ValueError, match="empty batch"):
        deblur.run(np.zeros((0, 1, H, W), np.float32))
    with pytest.raises(ValueError, match="numeric"):
        deblur.run(np.full((H, W), "a"))


def test_outputs_are_clipped_only_when_asked(deblur_artifact, cpu_backend):
    x = np.full((1, 1, H, W), 2.0, np.float32)  # the edge of what a [0, 1] artifact accepts; ReLU(conv) > 1
    with Reconstructor.from_artifact(deblur_artifact, backend=cpu_backend, clip=False) as rec:
        assert rec.run(x).max() > 1.0
    with Reconstructor.from_artifact(deblur_artifact, backend=cpu_backend) as rec:
        assert rec.run(x).max() == 1.0


def test_floats_far_outside_the_input_range_are_refused_not_saturated(deblur_artifact, cpu_backend):
    with Reconstructor.from_artifact(deblur_artifact, backend=cpu_backend) as rec:
        with pytest.raises(ValueError, match=r"far outside the artifact's input range \[0, 1\].*255"):
            rec.run(np.full((H, W), 200.0, np.float32))  # an 8-bit image passed as floats
        with pytest.raises(ValueError, match="far outside"):
            rec.run(np.full((H, W), -1.5, np.float32))
        assert rec.run(np.full((H, W), 255, np.uint8)).shape == (H, W)  # integers are scaled, so fine
        assert rec.run(np.full((H, W), 1.02, np.float32)).shape == (H, W)  # noise past the edge is fine


def test_ct_maps_sinograms_to_images_of_another_shape(ct_artifact, cpu_backend):
    y = np.random.default_rng(8).random((11, ANGLES, DETECTORS), dtype=np.float32)
    with Reconstructor.from_artifact(ct_artifact, backend=cpu_backend) as rec:
        out = rec.run(y)
        assert out.shape == (11, N, N)
        np.testing.assert_allclose(out[:, None], np.clip(ct_reference(y[:, None]), 0, 1), atol=1e-5)
        assert rec.run(y[0]).shape == (N, N)
        with pytest.raises(ValueError, match=rf"sinogram shape .*\({ANGLES}, {DETECTORS}\)"):
            rec.run(np.zeros((N, N), np.float32))


def test_one_reconstructor_serves_several_threads(deblur):
    rng = np.random.default_rng(9)
    inputs = [rng.random((3, H, W), dtype=np.float32) for _ in range(4)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = deblur.run(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(results[i][:, None], expected(x[:, None]), atol=1e-5)


def test_timings_cover_the_stages_and_a_closed_reconstructor_refuses_to_run(deblur_artifact, cpu_backend):
    rec = Reconstructor.from_artifact(deblur_artifact, backend=cpu_backend)
    rec.run(np.zeros((H, W), np.float32))
    assert {"prepare", "compute", "finish", "total"} <= set(rec.last_timings)
    rec.close()
    with pytest.raises(RuntimeError, match="closed"):
        rec.run(np.zeros((H, W), np.float32))
