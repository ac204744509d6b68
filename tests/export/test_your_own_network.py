"""A user's own network through recon (issue 24): checkpoints, the probe, refusals, one small export.

Real networks from MONAI and nnU-Net's dynamic_network_architectures, random weights, tiny sizes; the full
matrix (four architectures × deblur/CT × every CPU backend, FP16, INT8, consistency) is in
test_your_own_network_slow.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.export.checkpoint import load_into
from recon.export.errors import ExportError

monai_nets = pytest.importorskip("monai.networks.nets", reason="make venv installs monai (TEST_NETWORKS)")

HERE = Path(__file__).parent
UNET_ARGS = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8], "strides": [2],
             "norm": "batch"}  # fmt: skip


def tiny_unet(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return monai_nets.UNet(**{**UNET_ARGS, **changes})


# -- checkpoints ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["state_dict", "lightning", "ddp", "safetensors", "recon_last_pt"])
def test_a_checkpoint_in_any_common_form_loads_exactly(tmp_path, form):
    from safetensors.torch import save_file

    trained = tiny_unet()
    state = trained.state_dict()
    path = tmp_path / ("ckpt.safetensors" if form == "safetensors" else "ckpt.pt")
    if form == "state_dict":
        torch.save(state, path)
    elif form == "lightning":  # LightningModule holding the network as self.model
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif form == "ddp":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif form == "safetensors":
        save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(path))
    else:  # recon-train's last.pt: {"model": state, "optimizer": ..., ...}
        torch.save({"model": state, "step": 3}, path)
    fresh = tiny_unet()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # so that loading has something to undo
    load_into(fresh, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_checkpoint_that_does_not_fit_lists_missing_and_unexpected_keys_one_line_each(tmp_path):
    state = tiny_unet().state_dict()
    first = next(iter(state))
    state["head.extra.weight"] = torch.zeros(1)
    del state[first]
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(ExportError) as error:
        load_into(tiny_unet(), tmp_path / "ckpt.pt")
    lines = str(error.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[1].strip().startswith("missing keys (1):") and first in lines[1]
    assert lines[2].strip().startswith("unexpected keys (1):") and "head.extra.weight" in lines[2]


def test_a_pickled_module_is_refused_not_unpickled(tmp_path):
    torch.save(tiny_unet(), tmp_path / "whole-module.pt")  # a pickle that would run code on load
    with pytest.raises(ExportError, match="weights_only"):
        load_into(tiny_unet(), tmp_path / "whole-module.pt")


def test_a_checkpoint_of_another_width_says_which_tensors_differ(tmp_path):
    torch.save(tiny_unet(channels=[8, 16]).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ExportError, match="another shape"):
        load_into(tiny_unet(), tmp_path / "wide.pt")


# -- the probe -----------------------------------------------------------------------------------------------
def probe(network: torch.nn.Module, task: str = "deblur", size: int = 32):
    from recon.export.network_source import probe_torch
    from recon.training.tasks import task_config

    overrides = {"image_size": size, **({"n_views": 20} if task == "ct" else {})}
    return probe_torch(network, task_config(task, **overrides), seed=0)


@pytest.mark.parametrize(
    ("model", "config"),
    [("cnn", {"n_filters": 8}), ("unet", {"c0": 4, "depth": 3}),
     ("resunet", {"c0": 4, "depth": 2, "blocks_per_level": 1})],
)  # fmt: skip
def test_the_probe_measures_the_receptive_field_the_registry_declares(model, config):
    """recon's own families declare their field (receptive_field_layers, the course's formula); the probe
    measures it on the network as any other: at least that (the formula's window, rounded up to odd around
    the pixel) and not more than a stride's phase beyond. Max-pools and ReLUs that hide paths on real images
    would make it smaller: the positive twin is what keeps it exact."""
    from recon.export.exporter import receptive_field_of
    from recon.training.models import create_model

    torch.manual_seed(0)
    network = create_model(model, **config)
    _, measured = probe(network)
    declared = receptive_field_of(network)
    assert declared <= measured.receptive_field <= declared + 8, (declared, measured.receptive_field)


def test_the_probe_finds_the_multiple_and_the_export_pads_to_it():
    network, measured = probe(tiny_unet(strides=[2, 2], channels=[4, 8, 16]))
    assert measured.fully_convolutional and measured.multiple_of == 4
    with torch.no_grad():
        odd = network(torch.rand(1, 1, 37, 45))  # the bare MONAI UNet fails at 37×45
    assert odd.shape == (1, 1, 37, 45)


def test_instance_normalisation_is_measured_as_a_global_field():
    _, measured = probe(tiny_unet(norm="instance"))
    assert measured.receptive_field is None
    assert any("global receptive field" in w for w in measured.warnings)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"in_channels": 3}, "takes 3 input channels"),
        ({"out_channels": 2}, "returns 2 channels"),
        ({"spatial_dims": 3}, "3-D network"),
        ({"norm": ("batch", {"track_running_stats": False})}, "changes with the other images in its batch"),
    ],
)
def test_networks_recon_cannot_deploy_are_refused_with_the_reason(changes, fragment):
    with pytest.raises(ExportError, match=fragment):
        probe(tiny_unet(**changes))


def test_dropout_left_in_the_forward_is_refused():
    class AlwaysDropout(torch.nn.Module):  # F.dropout(training=True): eval() does not switch it off
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_unet()

        def forward(self, x):
            return torch.nn.functional.dropout(self.net(x), 0.5, training=True)

    with pytest.raises(ExportError, match="between two runs"):
        probe(AlwaysDropout())


# -- the whole chain, small ----------------------------------------------------------------------------------
def test_recon_export_network_writes_an_artifact_that_runs_at_any_size(tmp_path, capsys):
    """recon-export --network … --weights (a Lightning checkpoint) → an any-size artifact with the probe in
    its manifest; the runtime's output at an odd size equals the torch network's."""
    from recon.export.cli import main
    from recon.export.network_source import padded_network
    from recon.runtime.reconstructor import Reconstructor

    trained = tiny_unet(strides=[2, 2], channels=[4, 8, 16])
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "c.pt")
    args = [
        f"{k}={json.dumps(v)}" for k, v in {**UNET_ARGS, "strides": [2, 2], "channels": [4, 8, 16]}.items()
    ]
    out = tmp_path / "art"
    with pytest.raises(SystemExit) as exit_info:
        main(["--network", "monai.networks.nets:UNet", *[a for arg in args for a in ("--network-arg", arg)],
              "--weights", str(tmp_path / "c.pt"), "--task", "deblur", "--size", "32", "--batch", "1:2:4",
              "--threads", "1", "--engine", "none", "--consistency-images", "16", "--out", str(out),
              "--quiet", "--json"])  # fmt: skip
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "unet-deblur" and summary["parity"]["passed"]
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert model["config"]["factory"] == "monai.networks.nets:UNet" and model["config"]["pad_multiple"] == 4
    assert model["probe"]["multiple_of"] == 4 and model["weights_source"] == "user"
    assert summary["spatial"]["whole_image"] and summary["spatial"]["receptive_field"] > 1

    image = np.random.default_rng(0).random((1, 1, 45, 53), dtype=np.float32)
    with Reconstructor.from_artifact(out, backend="onnxruntime-cpu", threads=1, clip=False) as rec:
        got = rec.run(image)
    with torch.no_grad():
        want = padded_network(trained.eval(), 4)(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_wrong_factory_argument_is_one_line(tmp_path, capsys):
    from recon.export.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--network", "monai.networks.nets:UNet", "--network-arg", "spatial_dims=2", "--random-init",
              "--out", str(tmp_path / "art"), "--quiet", "--engine", "none"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code != 0
    assert err.count("\n") == 1 and "UNet(spatial_dims=2) failed" in err and "Traceback" not in err
    assert not (tmp_path / "art").exists()


# -- FP16 on a graph recon did not write ----------------------------------------------------------------
def test_a_failed_fp16_gate_names_the_node_and_the_option_that_fixes_it(tmp_path, monkeypatch):
    """A network whose last layer's weight (1e-8) FP16 cannot hold: the export is refused, and the message
    names the nodes (the overflowing 1e4·1e4 layer and the underflowing one) with --keep-fp32 for each."""
    from recon.export import export_network

    monkeypatch.syspath_prepend(str(HERE))
    with pytest.raises(ExportError) as error:
        export_network(factory="user_networks:unet_with_a_tiny_weight", task="deblur", out=tmp_path / "art",
                       task_overrides={"image_size": 32}, fp16=True, engine="none", batch=(1, 2, 4),
                       threads=1, consistency_images=0)  # fmt: skip
    message = str(error.value)
    assert "onnxruntime-fp16 vs torch" in message and "FP16 breaks at node 'node_Conv_68'" in message
    assert "--keep-fp32 node_Conv_68 --keep-fp32 node_Conv_69" in message
    assert not (tmp_path / "art").exists()


# -- an ONNX file --------------------------------------------------------------------------------------------
def test_an_onnx_file_with_a_fixed_batch_is_refused_with_what_to_do(tmp_path):
    from recon.export import ExportOptions, export_artifact

    path = tmp_path / "fixed.onnx"
    torch.onnx.export(tiny_unet().eval(), (torch.rand(1, 1, 32, 32),), str(path), dynamo=True,
                      external_data=False).save(str(path), external_data=False)  # fmt: skip
    with pytest.raises(ExportError, match="batch axis is fixed at 1; export the graph with a dynamic batch"):
        export_artifact(ExportOptions(onnx=path, task="deblur", out=tmp_path / "art", engine="none"))
