"""The C++ host (through its C ABI) gives what recon.runtime gives on the same backend: images within 1e-5
(FP32; INT8 on the same QDQ graph alike), the same consistency scores, flags and reasons, the same plan
(whole, padded, tiled with an odd tile), and the same refusals of bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from host_ctypes import Host, HostError

from recon.runtime import Reconstructor

ATOL = 1e-5


def measurements(artifact, n: int, seed: int = 0) -> np.ndarray:
    """n measurements of the artifact's task: half in distribution, half shifted (so some get flagged)."""
    from recon.export.consistency import EVALUATION_STREAM, in_distribution_set
    from recon.runtime.artifact.manifest import load_manifest

    cfg = load_manifest(artifact).task_config
    y, _ = in_distribution_set(cfg, n, EVALUATION_STREAM, seed=seed)
    rng = np.random.default_rng(seed)
    y[n // 2 :] += rng.normal(0, 0.2 * float(np.abs(y).mean()), y[n // 2 :].shape).astype(np.float32)
    return np.ascontiguousarray(y, np.float32)


def python_run(artifact, images, **options):
    with Reconstructor.from_artifact(artifact, backend="openvino", threads=1, **options) as rec:
        output = rec.run(images)
        return output, rec.last_scores, rec.size_plan(*np.shape(images)[-2:])


def assert_same(artifact, images, host_lib, **options):
    expected, scores, plan = python_run(artifact, images, **options)
    with Host(host_lib, artifact, threads=1, **options) as host:
        output, host_scores = host.run(images)
        assert host.size_plan(*np.shape(images)[-2:]) == plan
    assert output.shape == expected.shape and output.dtype == np.float32
    np.testing.assert_allclose(output, expected, rtol=0, atol=ATOL)
    assert len(host_scores) == len(scores) == len(images)
    for mine, theirs in zip(host_scores, scores, strict=True):
        assert mine.residual == pytest.approx(theirs.residual, rel=1e-5, abs=1e-7)
        assert (mine.flagged, mine.reasons) == (theirs.flagged, theirs.reasons)
    return plan, [s.flagged for s in scores]


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("task", ["deblur", "ct"])
def test_whole_batches_match_the_python_runtime(host_artifacts, host_lib, task, batch):
    y = measurements(host_artifacts[task], batch)
    plan, flags = assert_same(host_artifacts[task], y, host_lib)
    assert plan == "whole"
    with Host(host_lib, host_artifacts[task]) as host:  # every statistic by name, residual among them
        _, scores = host.run(y)
        assert host.statistic(y, "residual") == [s.residual for s in scores]
    if batch == 8:  # the comparison covers both answers of the check
        assert any(flags) and not all(flags), flags


def test_int8_matches_the_python_runtime_on_the_same_graph(host_artifacts, host_lib):
    assert_same(
        host_artifacts["deblur"], measurements(host_artifacts["deblur"], 8), host_lib, precision="int8"
    )


@pytest.mark.parametrize(
    ("shape", "options", "plan"),
    [
        ((3, 20, 27), {}, "padded"),  # below the graph's minimum side: reflect-padded, cropped back
        # an odd tile, 3 x 2 windows; an overlap below the receptive field, so the blending weights show
        ((1, 83, 61), {"tile": 40, "overlap": 4}, "tiled"),
        (
            (9, 1, 50, 70),
            {"tile": 36, "overlap": 10, "blend": "cosine"},
            "tiled",
        ),  # more tiles than the batch max
        ((11, 1, 32, 32), {}, "whole"),  # above the profile's max: split in chunks of 8
    ],
    ids=["padded", "tiled-odd", "tiled-cosine-chunked", "chunked"],
)
def test_any_size_plans_match_the_python_runtime(host_artifacts, host_lib, shape, options, plan):
    images = np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)
    assert assert_same(host_artifacts["deblur"], images, host_lib, **options)[0] == plan


def test_integer_images_are_scaled_as_python_scales_them(host_artifacts, host_lib):
    images = np.random.default_rng(4).integers(0, 65535, (2, 32, 32), dtype=np.uint16)
    assert_same(host_artifacts["deblur"], images, host_lib)


def test_clipping_off_and_consistency_off_match(host_artifacts, host_lib):
    images = np.random.default_rng(5).uniform(0, 1, (2, 1, 32, 32)).astype(np.float32)
    expected, _, _ = python_run(host_artifacts["deblur"], images, clip=False, consistency=False)
    with Host(host_lib, host_artifacts["deblur"], clip=False, consistency=False) as host:
        output, scores = host.run(images)
    assert scores == []
    assert (expected < 0).any() or (expected > 1).any()  # the clip would have changed something
    np.testing.assert_allclose(output, expected, rtol=0, atol=ATOL)


BAD_INPUTS = {
    "NaN": ("deblur", lambda: np.full((1, 32, 32), np.nan, np.float32)),
    "far outside the range": ("deblur", lambda: np.full((1, 32, 32), 255.0, np.float32)),
    "wrong rank": ("deblur", lambda: np.zeros((2, 3, 32, 32), np.float32)),
    "empty batch": ("deblur", lambda: np.zeros((0, 32, 32), np.float32)),
    "wrong sinogram shape": ("ct", lambda: np.zeros((1, 20, 45), np.float32)),
    "integer sinogram": ("ct", lambda: np.zeros((1, 20, 46), np.uint16)),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_the_python_runtimes_message(host_artifacts, host_lib, case):
    task, make = BAD_INPUTS[case]
    images = make()
    rec = Reconstructor.from_artifact(host_artifacts[task], backend="openvino", threads=1)
    with rec, pytest.raises(ValueError) as python_error:
        rec.run(images)
    with Host(host_lib, host_artifacts[task]) as host, pytest.raises(HostError) as host_error:
        host.run(images)
    assert host_error.value.kind == "input"
    assert str(host_error.value) == str(python_error.value)


def test_concurrent_runs_on_one_handle_give_the_serial_results(host_artifacts, host_lib):
    rng = np.random.default_rng(6)
    batches = [rng.uniform(0, 1, (n, 1, 32 + 8 * n, 32)).astype(np.float32) for n in (1, 2, 3, 4)]
    with Host(host_lib, host_artifacts["deblur"], threads=1) as host:
        serial = [host.run(b)[0] for b in batches]
        results: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            for _ in range(3):  # ctypes releases the GIL: the four threads are inside the library at once
                results[i] = host.run(batches[i])[0]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    for i, expected in enumerate(serial):
        np.testing.assert_array_equal(results[i], expected)


BAD_OPTIONS = {
    "tile on a CT artifact": ("ct", {"tile": 40}),
    "tile above the maximum": ("deblur", {"tile": 4096}),
    "overlap as large as the tile": ("deblur", {"tile": 40, "overlap": 40}),
    "unknown blend": ("deblur", {"blend": "box"}),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options_are_refused_with_the_python_runtimes_message(host_artifacts, host_lib, case):
    task, options = BAD_OPTIONS[case]
    with pytest.raises(ValueError) as python_error:
        Reconstructor.from_artifact(host_artifacts[task], backend="openvino", threads=1, **options)
    with pytest.raises(HostError) as host_error:
        Host(host_lib, host_artifacts[task], **options).close()
    assert host_error.value.kind == "option"
    assert str(host_error.value) == str(python_error.value)
