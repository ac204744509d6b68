"""Specifications of the task definitions: configs, simulation, network inputs, exportable pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from recon.training.physics import Blur, ParallelBeamCT
from recon.training.tasks import (
    ReconstructionPipeline,
    build_physics,
    network_input,
    simulate,
    task_config,
)


def test_defaults_describe_the_course_setups():
    deblur, ct = task_config("deblur"), task_config("ct")
    assert (deblur.kernel_kind, deblur.kernel_size, deblur.angle, deblur.motion_style) == (
        "motion",
        7,
        45.0,
        "centred",
    )
    assert (ct.image_size, ct.n_views, ct.n_detectors, ct.filter) == (256, 60, 363, "ram-lak")
    assert deblur.noise_level == ct.noise_level == 0.01
    json.dumps(deblur.to_json()), json.dumps(ct.to_json())


def test_task_config_drops_none_overrides_and_rejects_unknown_ones():
    cfg = task_config("ct", n_views=180, noise_level=None)
    assert cfg.n_views == 180 and cfg.noise_level == task_config("ct").noise_level
    with pytest.raises(ValueError, match="n_angle"):
        task_config("ct", n_angle=180)
    with pytest.raises(ValueError, match="unknown task"):
        task_config("denoise")


def test_build_physics_returns_the_task_operator():
    assert isinstance(build_physics(task_config("deblur")), Blur)
    ct = build_physics(task_config("ct", image_size=32, n_views=9))
    assert isinstance(ct, ParallelBeamCT) and ct.sinogram_shape == (9, 46)


@pytest.mark.parametrize(
    ("task", "overrides", "shape"),
    [
        ("deblur", {"image_size": 32}, (2, 1, 32, 32)),
        ("ct", {"image_size": 32, "n_views": 12}, (2, 1, 12, 46)),
    ],
)
def test_simulate_gives_measurements_of_the_task_shape_with_the_noise_level(task, overrides, shape):
    cfg = task_config(task, **overrides)
    x = torch.rand(2, 1, 32, 32)
    y = simulate(x, cfg, torch.Generator().manual_seed(0))
    assert y.shape == shape
    clean = simulate(x, cfg.with_overrides(noise_level=0.0))
    ratio = (y - clean).flatten(1).norm(dim=1) / clean.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full((2,), 0.01), rtol=1e-4, atol=0)
    torch.testing.assert_close(y, simulate(x, cfg, torch.Generator().manual_seed(0)), rtol=0, atol=0)
    inp = network_input(y, cfg, build_physics(cfg))
    assert inp.shape == x.shape


def test_ct_simulation_projects_a_finer_grid_with_the_same_geometry():
    cfg = task_config("ct", image_size=64, n_views=20, noise_level=0.0)
    x = torch.zeros(1, 1, 64, 64)
    x[..., 20:44, 24:40] = 1.0
    fine = simulate(x, cfg)
    coarse = build_physics(cfg).A(x)
    rel = (fine - coarse).norm() / coarse.norm()
    assert 1e-4 < rel < 0.05  # the same sinogram up to discretisation, but not the inverse crime


def test_ct_pipeline_is_network_after_fbp_and_exports_as_one_graph(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    cfg = task_config("ct", image_size=64, n_views=16)
    network = nn.Conv2d(1, 1, 3, padding=1)
    pipeline = ReconstructionPipeline(network, cfg).eval()
    y = simulate(torch.rand(3, 1, 64, 64), cfg)
    with torch.no_grad():
        expected = pipeline(y)
        torch.testing.assert_close(expected, network(network_input(y, cfg, build_physics(cfg))))
    path = tmp_path / "pipeline.onnx"
    torch.onnx.export(
        pipeline, (y[:2],), str(path), dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: y.numpy()})[0]
    assert np.abs(got - expected.numpy()).max() <= 1e-4 * np.abs(expected.numpy()).max()


def test_deblur_pipeline_is_the_network_alone():
    network = nn.Conv2d(1, 1, 3, padding=1)
    y = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(ReconstructionPipeline(network, task_config("deblur"))(y), network(y))
