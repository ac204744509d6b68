"""Four architectures from two libraries through the whole chain (issue 24): export for deblur and CT with
FP16, INT8 and the consistency check, parity passed, then run on every CPU backend at 256² and at an odd
size and compared with the torch network. One more is trained for a few steps with `recon-train --network`.

Random weights (no download): MONAI's BasicUNet (instance norm: a global field) and UNet (batch norm),
nnU-Net's PlainConvUNet and ResidualEncoderUNet through a user's factory module (user_networks.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cpu_backends import CPU_BACKENDS

pytest.importorskip("monai.networks.nets", reason="make venv installs monai (TEST_NETWORKS)")
pytest.importorskip("dynamic_network_architectures", reason="make venv installs it (TEST_NETWORKS)")

HERE = Path(__file__).parent
MONAI_2D = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1}
NETWORKS = {
    "basicunet": ("monai.networks.nets:BasicUNet", {**MONAI_2D, "features": [4, 4, 8, 8, 16, 4]}),
    "monai-unet": ("monai.networks.nets:UNet", {**MONAI_2D, "channels": [4, 8, 16], "strides": [2, 2],
                                                "norm": "batch", "num_res_units": 1}),
    "plainconvunet": ("user_networks:plain_conv_unet", {"features": [4, 8, 16]}),
    "residualencoderunet": ("user_networks:residual_encoder_unet", {"features": [4, 8, 16]}),
}  # fmt: skip
SMALL = {"deblur": {"image_size": 32}, "ct": {"image_size": 45, "n_views": 20}}  # 45: odd, padded in-graph
pytestmark = pytest.mark.slow


def _tolerances():
    from recon.export.parity import DEFAULT_TOLERANCES, Tolerance

    # Random weights spread the outputs over [-0.5, 3] (the probe's output_range), four times the deployed
    # [0, 1]: INT8's 256 levels then cost ~4 dB against the trained-network gate of 35 dB.
    return {**DEFAULT_TOLERANCES, "onnxruntime-int8": Tolerance(min_psnr=30.0)}


TOLERANCES = _tolerances()


@pytest.fixture(scope="module", autouse=True)
def user_networks_importable():
    sys.path.insert(0, str(HERE))  # as a user's PYTHONPATH would hold their own module
    yield
    sys.path.remove(str(HERE))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from recon.export import export_network

    cache: dict[tuple[str, str], tuple[Path, dict]] = {}

    def get(name: str, task: str) -> tuple[Path, dict]:
        if (name, task) not in cache:
            factory, args = NETWORKS[name]
            out = tmp_path_factory.mktemp("own") / f"{name}-{task}"
            torch.manual_seed(0)
            summary = export_network(
                factory=factory, network_args=args, task=task, out=out, task_overrides=SMALL[task],
                fp16=True, int8=True, engine="none", batch=(1, 2, 4), threads=1,
                consistency_images=16, calibration_images=8, tolerances=TOLERANCES,
            )  # fmt: skip
            cache[(name, task)] = (out, summary)
        return cache[(name, task)]

    return get


def torch_network(artifact: Path) -> torch.nn.Module:
    """The exported torch pipeline, weights as exported (random init, seed 0, rebuilt the same way)."""
    from recon.export.exporter import build_pipeline
    from recon.export.network_source import build_from_factory, padded_network
    from recon.runtime.artifact.manifest import load_manifest

    manifest = load_manifest(artifact)
    config = manifest.model["config"]
    torch.manual_seed(0)
    network = padded_network(build_from_factory(config["factory"], config["args"]), config["pad_multiple"])
    return build_pipeline(network.eval(), manifest.task_config)[0].eval()


@pytest.mark.parametrize("task", ["deblur", "ct"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_library_network_exports_with_every_check_passed(exported, name, task):
    artifact, summary = exported(name, task)
    parity = summary["parity"]
    assert parity["passed"]
    for key in ("onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8"):
        assert parity[key]["passed"], (key, parity[key])
    assert summary["consistency"]["calibration"]["n"] == 16
    probe = json.loads((artifact / "manifest.json").read_text())["model"]["probe"]
    assert probe["batch_independent"] and probe["channels"] == 1
    if name == "basicunet":  # instance normalisation: every output pixel sees the whole image
        assert probe["receptive_field"] is None
    else:
        assert 10 < probe["receptive_field"] < 200


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("size", [(256, 256), (255, 251)])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_deblur_artifact_runs_at_256_and_an_odd_size_on_every_cpu_backend(exported, name, size, backend):
    from recon.runtime.reconstructor import Reconstructor

    artifact, _ = exported(name, "deblur")
    image = np.random.default_rng(1).random((2, 1, *size), dtype=np.float32)
    with Reconstructor.from_artifact(artifact, backend=backend, threads=1, clip=False) as rec:
        got, scores = rec.run(image, return_scores=True)
    with torch.no_grad():
        want = torch_network(artifact)(torch.from_numpy(image)).numpy()
    assert got.shape == want.shape == image.shape
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert len(scores) == 2 and all(np.isfinite(s.residual) for s in scores)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_ct_artifact_runs_on_every_cpu_backend(exported, name, precision, backend):
    from recon.export.parity import psnr, simulated_inputs
    from recon.runtime.reconstructor import Reconstructor

    artifact, summary = exported(name, "ct")
    sinograms, _ = simulated_inputs(
        torch_network(artifact).task_config, [3], SMALL["ct"]["image_size"], seed=5
    )
    with Reconstructor.from_artifact(
        artifact, backend=backend, precision=precision, threads=1, clip=False
    ) as rec:
        got, scores = rec.run(sinograms[3], return_scores=True)
    with torch.no_grad():
        want = torch_network(artifact)(torch.from_numpy(sinograms[3])).numpy()
    assert got.shape == want.shape == (3, 1, 45, 45)
    if precision == "fp32":
        np.testing.assert_allclose(got, want, atol=2e-4)
    else:
        assert psnr(np.clip(want, 0, 1), np.clip(got, 0, 1)) > 30
    assert not any(s.flagged for s in scores)  # in-distribution inputs pass the calibrated check


def test_recon_train_network_then_export_then_bench(tmp_path, capsys):
    """recon-train --network (a few steps) → recon-export --network --weights (arguments and task from the
    card) → recon-bench --compare-torch rebuilds the factory from the manifest."""
    from click.testing import CliRunner

    from recon.export.cli import main as export_main
    from recon.runtime.cli.main import bench_main
    from recon.training.cli import train_main

    factory, args = NETWORKS["monai-unet"]
    network_args = [a for k, v in args.items() for a in ("--network-arg", f"{k}={json.dumps(v)}")]
    result = CliRunner().invoke(train_main, [
        "--network", factory, *network_args, "--task", "deblur", "--image-size", "32", "--steps", "4",
        "--batch-size", "2", "--crop", "32", "--pool", "8", "--heldout", "2", "--steps-per-epoch", "4",
        "--threads", "1", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    weights = tmp_path / "run" / "unet-deblur.safetensors"
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["model"]["factory"] == factory and card["model"]["args"] == args
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--network", factory, "--weights", str(weights), "--engine", "none", "--batch", "1:2:4",
                     "--threads", "1", "--consistency-images", "16", "--int8", "--calibration-images", "4",
                     "--out", str(tmp_path / "art"), "--quiet", "--json"])  # fmt: skip
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["model"]["trained_task_config"]["image_size"] == 32
    assert manifest["model"]["weights_source"] == "user" and summary["parity"]["passed"]
    with pytest.raises(SystemExit) as exit_info:
        bench_main([str(tmp_path / "art"), "--batch", "1", "--iters", "2", "--threads", "1",
                    "--compare-torch"])  # fmt: skip
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None)
    assert "torch-eager" in out and "rebuilt from the manifest" in out
