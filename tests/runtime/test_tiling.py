"""Sliding-window inference (numpy) and the manifest's spatial entry, without any model or torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from runtime_artifacts import H, build_artifact, conv_reference

from recon.runtime.artifact.manifest import ArtifactError, load_manifest
from recon.runtime.artifact.spatial import SpatialError, default_overlap, parse_spatial
from recon.runtime.tiling import importance_map, reflect_pad, sliding_window, window_starts

GOOD = {
    "whole_image": True, "min": 64, "opt": 512, "max": 2048, "multiple_of": 1, "tile": 2048,
    "overlap": 320, "blend": "gaussian", "receptive_field": 309,
}  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (33, 32, 16), (32, 32, 8), (257, 64, 0)])
def test_windows_cover_every_pixel_and_end_flush_with_the_border(size, tile, overlap):
    starts = window_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == size - tile
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("blend", ["gaussian", "cosine", "constant"])
def test_importance_maps_peak_at_one_in_the_centre_and_stay_positive(blend):
    weights = importance_map((32, 48), blend)
    assert weights.shape == (32, 48) and weights.dtype == np.float32
    assert weights.max() == pytest.approx(1.0) and weights.min() > 0
    assert weights[16, 24] >= weights[0, 0]


def test_identity_predictor_gives_back_the_image_for_every_blend():
    images = np.random.default_rng(0).random((3, 1, 70, 45), dtype=np.float32)
    for blend in ("gaussian", "cosine"):
        out = sliding_window(images, lambda tiles: tiles, 32, 12, batch_size=5, blend=blend, trim=6)
        np.testing.assert_allclose(out, images, rtol=1e-6, atol=1e-6)


def test_trimmed_tiles_agree_exactly_with_whole_image_convolution():
    """A 3×3 conv (receptive field 3): with trim >= 1 tiles equal the whole-image result; without trim the
    tile borders (zero padding inside the image) show."""
    images = np.random.default_rng(1).random((2, 1, 90, 77), dtype=np.float32)
    whole = conv_reference(images)
    tiled = sliding_window(images, conv_reference, 32, 8, batch_size=4, trim=4)
    untrimmed = sliding_window(images, conv_reference, 32, 8, batch_size=4, trim=0)
    assert psnr(whole, tiled) > 100
    assert psnr(whole, untrimmed) < psnr(whole, tiled) - 20


def test_images_smaller_than_a_tile_are_reflect_padded_and_cropped_back():
    images = np.random.default_rng(2).random((1, 1, 20, 27), dtype=np.float32)
    seen = []

    def predictor(tiles: np.ndarray) -> np.ndarray:
        seen.append(tiles.shape)
        return tiles * 2

    out = sliding_window(images, predictor, 32, 8)
    assert seen == [(1, 1, 32, 32)] and out.shape == images.shape
    np.testing.assert_allclose(out, images * 2, rtol=1e-6)
    padded = reflect_pad(images, 32, 32)
    np.testing.assert_array_equal(
        padded[..., 20:22, :27], images[..., [18, 17], :]
    )  # reflection, no edge copy


def test_sliding_window_refuses_bad_overlap_and_trim():
    images = np.zeros((1, 1, 64, 64), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(images, lambda t: t, 32, 32)
    with pytest.raises(ValueError, match="trim"):
        sliding_window(images, lambda t: t, 32, 8, trim=5)


def test_default_overlap_covers_the_receptive_field_within_half_a_tile():
    assert default_overlap(2048, 309) == 320
    assert default_overlap(256, 309) == 128
    assert default_overlap(256, None) == 64
    assert default_overlap(2048, 7) == 16


def test_a_valid_spatial_entry_parses():
    spatial = parse_spatial(GOOD)
    assert spatial.takes_whole(2048, 100) and not spatial.takes_whole(2049, 100)
    tiled_only = parse_spatial({**GOOD, "whole_image": False, "min": 256, "opt": 256, "max": 256, "tile": 256,
                                "overlap": 64, "receptive_field": None})  # fmt: skip
    assert tiled_only.takes_whole(256, 256) and not tiled_only.takes_whole(128, 256)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"min": 0}, "min must be an integer"),
        ({"opt": 4096}, "min <= opt <= max"),
        ({"max": 10**6}, "max must be an integer"),
        ({"tile": 4096}, "tile 4096 must lie within"),
        ({"overlap": 2048}, "overlap must be an integer"),
        ({"overlap": -1}, "overlap must be an integer"),
        ({"blend": "median"}, "blend must be one of"),
        ({"whole_image": "yes"}, "whole_image must be true or false"),
        ({"receptive_field": 0}, "receptive_field"),
        ({"multiple_of": 3}, "multiples of multiple_of"),
        ({"colour": 1}, "unknown keys"),
    ],
)
def test_a_bad_spatial_entry_is_refused_with_the_field_named(change, message):
    with pytest.raises(SpatialError, match=message):
        parse_spatial({**GOOD, **change})


@pytest.fixture()
def conv_artifact(tmp_path):
    return build_artifact(tmp_path / "conv", "deblur")


def with_spatial(directory, **entry):
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data["spatial"] = entry
    path.write_text(json.dumps(data))
    return directory


TILED_ONLY = {
    "whole_image": False, "min": H, "opt": H, "max": H, "multiple_of": 1, "tile": H, "overlap": 6,
    "blend": "gaussian", "receptive_field": 3,
}  # fmt: skip


def test_a_fixed_size_graph_runs_any_size_through_tiles_equal_to_the_whole_image(conv_artifact):
    """The 16×16 conv graph with a tiled-only spatial entry: trimmed tiles give the whole-image conv."""
    from recon.runtime import Reconstructor

    with_spatial(conv_artifact, **TILED_ONLY)
    images = np.random.default_rng(3).random((3, 50, 37), dtype=np.float32)
    with Reconstructor.from_artifact(conv_artifact, backend="cpu", threads=1) as rec:
        assert rec.size_plan(50, 37) == "tiled" and rec.size_plan(H, H) == "whole"
        out = rec.run(images)
        single = rec.run(images[1])
    expected = np.clip(conv_reference(images[:, None]), 0, 1)[:, 0]
    assert out.shape == images.shape and single.shape == images.shape[1:]
    assert psnr(expected, out) > 100
    np.testing.assert_allclose(single, out[1], atol=1e-6)


def test_an_image_smaller_than_the_tile_is_reflect_padded_and_cropped(conv_artifact):
    from recon.runtime import Reconstructor

    with_spatial(conv_artifact, **TILED_ONLY)
    image = np.random.default_rng(4).random((10, 13), dtype=np.float32)
    with Reconstructor.from_artifact(conv_artifact, backend="cpu", threads=1) as rec:
        out = rec.run(image)
    padded = reflect_pad(image[None, None], H, H)
    expected = np.clip(conv_reference(padded), 0, 1)[0, 0, :10, :13]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sizes_mixed_in_one_call_and_a_tile_for_a_fixed_graph_are_refused(conv_artifact):
    from recon.runtime import Reconstructor

    with_spatial(conv_artifact, **TILED_ONLY)
    rec = Reconstructor.from_artifact(conv_artifact, backend="cpu", threads=1)
    with rec, pytest.raises(ValueError, match="different sizes in one call.*once per size"):
        rec.run([np.zeros((20, 20), np.float32), np.zeros((30, 20), np.float32)])
    with pytest.raises(ValueError, match="takes only tiles of 16×16"):
        Reconstructor.from_artifact(conv_artifact, backend="cpu", tile=32)


def test_tile_options_need_a_spatial_entry(conv_artifact):
    from recon.runtime import Reconstructor

    with pytest.raises(ValueError, match="no spatial entry"):
        Reconstructor.from_artifact(conv_artifact, backend="cpu", overlap=4)


def test_load_manifest_refuses_a_damaged_spatial_entry(conv_artifact):
    path = conv_artifact / "manifest.json"
    data = json.loads(path.read_text())
    data["spatial"] = {**GOOD, "overlap": 5000}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"manifest.json: spatial overlap .* re-export"):
        load_manifest(conv_artifact)
    data["spatial"] = {**GOOD, "min": 16, "tile": 64, "overlap": 16}
    path.write_text(json.dumps(data))
    assert load_manifest(conv_artifact).spatial.tile == 64


def test_recon_run_and_recon_bench_take_other_sizes_and_tile_options(conv_artifact, tmp_path):
    from test_runtime_cli import cli

    with_spatial(conv_artifact, **TILED_ONLY)
    images = np.random.default_rng(5).random((2, 40, 23), dtype=np.float32)
    np.save(tmp_path / "a.npy", images)
    result = cli("recon-run", conv_artifact, tmp_path / "a.npy", "--out", tmp_path / "out", "--overlap", "4")
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out" / "a.npy")
    assert out.shape == images.shape
    assert psnr(np.clip(conv_reference(images[:, None]), 0, 1)[:, 0], out) > 100
    refused = cli("recon-run", conv_artifact, tmp_path / "a.npy", "--out", tmp_path / "o2", "--tile", "32")
    assert refused.returncode != 0 and "takes only tiles of 16×16" in refused.stderr
    bench = cli("recon-bench", conv_artifact, "--backend", "cpu", "--size", "16,16", "--size", "32,32",
                "--batch", "1", "--iters", "2", "--warmup", "0", "--threads", "1")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert "latency vs pixels (onnxruntime-cpu, batch 1, p50): 32×32 / 16×16" in bench.stdout
    assert "for 4.00× the pixels" in bench.stdout
