"""A CT network deployed at the scanner's geometry: the FBP in the graph follows it, the fully convolutional
network is reused, both geometries are recorded, and the quality at the new one is measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recon.export.errors import ExportError
from recon.export.exporter import ExportOptions, export_artifact

# the geometry `saved_weights` (tests/export/conftest.py) trains its CT card on
TRAINED = {"image_size": 32, "n_views": 20}


def _options(saved_weights, tmp_path, **overrides):
    return ExportOptions(
        model="cnn",
        task="ct",
        out=tmp_path / "cnn-ct",
        weights=saved_weights("cnn", "ct"),
        task_overrides={**TRAINED, **overrides},
        engine="none",
        batch=(1, 2, 4),
        threads=1,
        geometry_heldout=4,
    )


def test_export_refuses_another_geometry_than_the_weights_were_trained_on(saved_weights, tmp_path):
    with pytest.raises(
        ExportError, match=r"trained at another geometry \(n_views 20 → 30.*--allow-geometry-change"
    ):
        export_artifact(_options(saved_weights, tmp_path, n_views=30))
    assert not (tmp_path / "cnn-ct").exists()


def test_a_changed_geometry_is_deployed_recorded_and_measured_when_allowed(saved_weights, tmp_path):
    from recon.runtime import Reconstructor
    from recon.runtime.artifact.manifest import load_manifest
    from recon.training.tasks import simulate, task_config

    options = _options(saved_weights, tmp_path, n_views=30, image_size=48)
    options.allow_geometry_change = True
    summary = export_artifact(options)
    manifest = load_manifest(tmp_path / "cnn-ct")
    deployed, trained = manifest.task_config, manifest.model["trained_task_config"]
    assert (deployed.n_views, deployed.image_size, deployed.n_detectors) == (30, 48, 68)  # ceil(√2·48)
    assert (trained["n_views"], trained["image_size"]) == (20, 32)
    assert manifest.input.shape == ("batch", 1, 30, 68) and manifest.output.shape[2:] == (48, 48)

    report = json.loads((tmp_path / "cnn-ct" / "parity.json").read_text())["geometry_change"]
    assert report["trained"] == trained and report["deployed"] == deployed.to_json()
    heldout = report["heldout"]
    assert heldout["n"] == 4 and heldout["size"] == [48, 48]
    assert np.isfinite(heldout["model"]["psnr"]) and np.isfinite(heldout["baseline"]["psnr"])
    assert summary["geometry"]["changed"].startswith("image_size 32 → 48")

    # the graph's FBP is the deployed geometry's: a sinogram simulated there reconstructs
    import torch

    cfg = task_config("ct", image_size=48, n_views=30, noise_level=0.0)
    x = torch.zeros(1, 1, 48, 48)
    x[..., 16:32, 16:32] = 1.0
    sinogram = simulate(x, cfg).numpy()
    with Reconstructor.from_artifact(tmp_path / "cnn-ct", backend="cpu") as rec:
        assert rec.run(sinogram).shape == (1, 1, 48, 48)


def test_a_noise_level_change_is_not_a_geometry_change(saved_weights, tmp_path):
    summary = export_artifact(_options(saved_weights, tmp_path, noise_level=0.03))
    assert "geometry" not in summary
