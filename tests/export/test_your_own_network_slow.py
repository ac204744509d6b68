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


def test_keep_fp32_on_the_named_nodes_passes_the_fp16_gate(tmp_path):
    """What the refusal advises works: the two nodes FP16 cannot hold kept FP32, the gate passes."""
    from recon.export import export_network

    summary = export_network(
        factory="user_networks:unet_with_a_tiny_weight", task="deblur", out=tmp_path / "art",
        task_overrides={"image_size": 32}, fp16=True, engine="none", batch=(1, 2, 4), threads=1,
        consistency_images=0, keep_fp32=("node_Conv_68", "node_Conv_69"),
    )  # fmt: skip
    assert summary["parity"]["onnxruntime-fp16"]["passed"]


@pytest.fixture(scope="module")
def user_onnx(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A MONAI UNet exported to ONNX the way its user would (dynamic batch, H and W multiples of 4)."""
    import monai.networks.nets as nets

    torch.manual_seed(0)
    network = nets.UNet(2, 1, 1, channels=[4, 8, 16], strides=[2, 2], norm="batch").eval()
    path = tmp_path_factory.mktemp("user") / "denoiser.onnx"
    sides = {2: 4 * torch.export.Dim("h4", min=4, max=256), 3: 4 * torch.export.Dim("w4", min=4, max=256)}
    program = torch.onnx.export(
        network, (torch.rand(2, 1, 64, 64),), dynamo=True, external_data=False, opset_version=18,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64), **sides},),
    )  # fmt: skip
    program.save(str(path), external_data=False)
    return path, network


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("task", ["deblur", "ct"])
def test_an_onnx_file_becomes_an_artifact_with_the_fbp_composed_in_front(user_onnx, tmp_path, task, backend):
    """recon-export --onnx: probed through onnxruntime (multiple 4 found, padded in the graph), the FBP in
    front for CT, FP16/INT8/consistency, parity against the pieces; the artifact equals the torch network the
    file came from, at an odd size."""
    from recon.export import ExportOptions, export_artifact
    from recon.export.exporter import build_pipeline
    from recon.export.network_source import padded_network
    from recon.runtime.reconstructor import Reconstructor

    path, network = user_onnx
    summary = export_artifact(ExportOptions(
        onnx=path, task=task, out=tmp_path / "art", task_overrides=SMALL[task], fp16=True, int8=True,
        engine="none", batch=(1, 2, 4), threads=1, consistency_images=16, calibration_images=8,
        tolerances=TOLERANCES,
    ))  # fmt: skip
    assert summary["parity"]["passed"] and summary["name"] == f"denoiser-{task}"
    model = json.loads((tmp_path / "art" / "manifest.json").read_text())["model"]
    assert model["config"]["source"] == "onnx" and model["probe"]["multiple_of"] == 4
    torch_pipeline, _ = build_pipeline(padded_network(network, 4), summary_task(tmp_path / "art"))
    if task == "deblur":
        batch = np.random.default_rng(2).random((2, 1, 67, 45), dtype=np.float32)
    else:
        from recon.export.parity import simulated_inputs

        batch = simulated_inputs(summary_task(tmp_path / "art"), [2], 45, seed=3)[0][2]
    with Reconstructor.from_artifact(tmp_path / "art", backend=backend, threads=1, clip=False) as rec:
        got = rec.run(batch)
    with torch.no_grad():
        want = torch_pipeline.eval()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-4)


def summary_task(artifact: Path):
    from recon.runtime.artifact.manifest import load_manifest

    return load_manifest(artifact).task_config


def test_export_network_takes_a_module_object_and_leaves_it_as_it_was(tmp_path):
    """The Python API with the module a user holds (in train mode): exported with its current weights, the
    caller's module untouched; --compare-torch then says it needs a factory instead of "unknown model"."""
    import user_networks

    from recon.export import CTTask, ExportError, export_network
    from recon.export.reference import torch_reports

    torch.manual_seed(0)
    network = user_networks.residual_encoder_unet().train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    summary = export_network(
        network, task=CTTask(image_size=45, n_views=20), out=tmp_path / "art", name="mine", engine="none",
        batch=(1, 2, 4), threads=1, consistency_images=16, int8=True, calibration_images=8,
        tolerances=TOLERANCES,
    )  # fmt: skip
    assert summary["name"] == "mine-ct" and summary["parity"]["passed"]
    assert network.training and all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    with pytest.raises(ExportError, match="needs the network's factory"):
        torch_reports(tmp_path / "art", [1], 1, 0, 1)
