"""Images of any size: symbolic H, W export for fully convolutional models, tiling through the runtime."""

from __future__ import annotations

import numpy as np
import pytest

from recon.export.errors import ExportError

# non-square, not multiples of 16 (the ResUNet pads to 16 inside its graph), one below and one at the minimum
SIZES = [(32, 32), (45, 77), (100, 64), (33, 48)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


# the ResUNet's dynamic export is also checked in the default suite by test_export_models (its parity
# summary holds "onnxruntime-fp32-other-sizes", torch vs ONNX at two non-square, non-multiple-of-16 sizes)
@pytest.mark.parametrize("model", ["cnn", pytest.param("resunet", marks=pytest.mark.slow)])
def test_fully_convolutional_models_take_any_size_and_match_torch(exported, saved_weights, model):
    from recon.runtime import Reconstructor
    from recon.training.weights import load_trained

    directory, summary = exported(model, "deblur")
    spatial = summary["spatial"]
    assert summary["input_shape"] == ["batch", 1, "height", "width"] == summary["output_shape"]
    assert spatial["whole_image"] and spatial["min"] == 32 and spatial["max"] == 2048
    assert spatial["receptive_field"] == {"cnn": 7, "resunet": 309}[model]
    assert summary["parity"]["onnxruntime-fp32-other-sizes"]["passed"]

    import torch

    network, _ = load_trained(model, "deblur", saved_weights(model, "deblur"))
    rng = np.random.default_rng(0)
    with Reconstructor.from_artifact(directory, backend="cpu", threads=1, clip=False) as rec:
        for height, width in SIZES:
            batch = rng.random((2, 1, height, width), dtype=np.float32)
            with torch.no_grad():
                expected = network.eval()(torch.from_numpy(batch)).numpy()
            assert rec.size_plan(height, width) == "whole"
            np.testing.assert_allclose(rec.run(batch), expected, atol=1e-4)
    with Reconstructor.from_artifact(
        directory, backend="cpu", threads=1, clip=False, precision="fp16"
    ) as rec:
        batch = rng.random((1, 1, 45, 77), dtype=np.float32)
        with torch.no_grad():
            expected = network(torch.from_numpy(batch)).numpy()
        assert psnr(expected, rec.run(batch)) > 50


def test_images_below_the_minimum_are_reflect_padded_and_cropped(exported, saved_weights):
    import torch

    from recon.runtime import Reconstructor
    from recon.runtime.tiling import reflect_pad
    from recon.training.weights import load_trained

    directory, _ = exported("cnn", "deblur")
    network, _ = load_trained("cnn", "deblur", saved_weights("cnn", "deblur"))
    image = np.random.default_rng(1).random((20, 27), dtype=np.float32)
    with Reconstructor.from_artifact(directory, backend="cpu", threads=1, clip=False) as rec:
        assert rec.size_plan(20, 27) == "padded"
        out = rec.run(image)
    with torch.no_grad():
        padded = torch.from_numpy(reflect_pad(image[None, None], 32, 32))
        expected = network.eval()(padded).numpy()[0, 0, :20, :27]
    assert out.shape == (20, 27)
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.fixture(scope="module")
def shipped_resunet(tmp_path_factory):
    """The shipped ResUNet weights exported at 64² (FP32 only): a trained network's receptive field is what
    tiling has to respect (a random-init ResUNet's output depends on its whole 309 px field)."""
    from recon.export.exporter import ExportOptions, export_artifact

    out = tmp_path_factory.mktemp("shipped") / "resunet"
    options = ExportOptions(
        model="resunet", task="deblur", out=out, task_overrides={"image_size": 64}, engine="none",
        batch=(1, 2, 4), threads=1,
    )  # fmt: skip
    export_artifact(options)
    return out


@pytest.mark.parametrize("model", ["cnn", "resunet"])
def test_tiled_inference_agrees_with_whole_image_inference(exported, shipped_resunet, model):
    """Real exported models, tiles of 96² (overlap 64) forced on 192×160 blurred phantoms: ≥ 45 dB
    (tiles of 64², overlap 32, give 40 dB with the shipped ResUNet: its effective field is wider)."""
    from recon.export.parity import simulated_inputs
    from recon.runtime import Reconstructor
    from recon.runtime.artifact.manifest import load_manifest

    directory = shipped_resunet if model == "resunet" else exported("cnn", "deblur")[0]
    task_cfg = load_manifest(directory).task_config
    images = simulated_inputs(task_cfg, [2], 192, seed=5)[0][2][..., :160]
    with Reconstructor.from_artifact(directory, backend="cpu", threads=1) as whole:
        expected = whole.run(images)
    with Reconstructor.from_artifact(directory, backend="cpu", threads=1, tile=96, overlap=64) as tiled:
        assert tiled.size_plan(192, 160) == "tiled" and tiled.size_plan(96, 96) == "whole"
        out = tiled.run(images)
    assert out.shape == images.shape
    assert psnr(expected, out) >= 45


def test_the_vit_runs_other_sizes_through_tiles(exported, saved_weights):
    """The ViT's graph takes its training size only: other sizes are tiles blended as a numpy reference
    blends the torch model's tiles; an image smaller than a tile is padded and cropped."""
    import torch

    from recon.runtime import Reconstructor
    from recon.runtime.tiling import reflect_pad, sliding_window
    from recon.training.tasks import ReconstructionPipeline, task_config
    from recon.training.weights import load_trained

    directory, summary = exported("vit", "deblur")
    spatial = summary["spatial"]
    assert summary["input_shape"] == ["batch", 1, 32, 32]
    assert not spatial["whole_image"] and spatial["tile"] == 32 and spatial["receptive_field"] is None
    network, _ = load_trained("vit", "deblur", saved_weights("vit", "deblur"))
    pipeline = ReconstructionPipeline(network, task_config("deblur", image_size=32)).eval()

    def predictor(tiles: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return pipeline(torch.from_numpy(tiles)).numpy()

    images = np.random.default_rng(3).random((2, 1, 80, 72), dtype=np.float32)
    small = np.random.default_rng(4).random((1, 1, 20, 27), dtype=np.float32)
    with Reconstructor.from_artifact(directory, backend="cpu", threads=1, clip=False) as rec:
        assert rec.size_plan(80, 72) == "tiled" and rec.size_plan(32, 32) == "whole"
        out, out_small = rec.run(images), rec.run(small)
    expected = sliding_window(images, predictor, 32, spatial["overlap"], batch_size=8)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    expected_small = predictor(reflect_pad(small, 32, 32))[..., :20, :27]
    np.testing.assert_allclose(out_small, expected_small, atol=1e-4)


def test_a_spatial_minimum_below_the_pad_multiple_is_refused(saved_weights, tmp_path):
    from recon.export.exporter import ExportOptions, export_artifact

    options = ExportOptions(
        model="resunet", task="deblur", out=tmp_path / "a", weights=saved_weights("resunet", "deblur"),
        task_overrides={"image_size": 32}, engine="none", spatial=(8, 32, 64),
    )  # fmt: skip
    with pytest.raises(ExportError, match="MIN must be at least 16"):
        export_artifact(options)
    assert not (tmp_path / "a").exists()


def test_a_model_that_fixes_its_size_fails_the_dynamic_export(tmp_path):
    import torch

    from recon.export.onnx_export import export_onnx

    class FixesSize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], 1, int(x.shape[2]) * int(x.shape[3]))[..., None].reshape(x.shape) * 2

    with pytest.raises(ExportError, match="dynamic height/width"):
        export_onnx(FixesSize().eval(), torch.rand(2, 1, 32, 32), tmp_path / "m.onnx", spatial=(16, 64))
