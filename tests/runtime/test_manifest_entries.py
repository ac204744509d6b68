"""The manifest is parsed once into typed, frozen entries, and written back as the JSON it was read from."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from recon.runtime.artifact.consistency_entry import Bound, ConsistencyEntry
from recon.runtime.artifact.manifest import ArtifactError, BatchProfile, IOSpec, Manifest, load_manifest
from recon.runtime.artifact.spatial import Spatial

SHA = "0" * 64
# written out by hand (as recon-export writes it), so the round trip is checked against the format itself
WRITTEN = {
    "format_version": 3,
    "recon_version": "0.1.0",
    "name": "resunet-deblur",
    "task": "deblur",
    "model": {"name": "resunet", "config": {"c0": 8}, "weights_sha256": None},
    "input": {"name": "measurement", "shape": ["batch", 1, "height", "width"], "dtype": "float32",
              "layout": "NCHW", "value_range": [0.0, 1.0]},
    "output": {"name": "image", "shape": ["batch", 1, "height", "width"], "dtype": "float32",
               "value_range": [0.0, 1.0], "clip": True},
    "task_config": {"task": "deblur", "image_size": 64, "kernel_kind": "motion", "kernel_size": 9,
                    "angle": 0.0, "variance": 1.0, "motion_style": "centred", "noise_level": 0.01},
    "batch": {"min": 1, "opt": 4, "max": 8},
    "spatial": {"whole_image": True, "min": 16, "opt": 64, "max": 1024, "multiple_of": 1, "tile": 1024,
                "overlap": 32, "blend": "gaussian", "receptive_field": 27},
    "files": {"model.onnx": {"sha256": SHA, "size": 10, "kind": "onnx", "precision": "fp32"},
              "consistency.onnx": {"sha256": SHA, "size": 10, "kind": "consistency", "precision": "fp32"}},
    "consistency": {"file": "consistency.onnx", "inputs": ["image", "measurement"], "output": "scores",
                    "statistics": ["residual", "mean"],
                    "bounds": {"residual": {"check": "upper", "low": None, "high": 0.02},
                               "mean": {"check": "both", "low": 0.1, "high": 0.9}},
                    "percentiles": {"residual": {"p50": 0.01}}, "threshold": 0.02, "margin": 0.1,
                    "rule": "flag when any statistic leaves its interval", "calibration": {"n": 500}},
}  # fmt: skip


def test_reading_and_writing_a_manifest_gives_back_the_same_json():
    manifest = Manifest.from_json(json.loads(json.dumps(WRITTEN)))
    assert manifest.to_json() == WRITTEN
    assert manifest.input == IOSpec(
        "measurement", ("batch", 1, "height", "width"), "float32", "NCHW", (0.0, 1.0), None
    )
    assert manifest.output.clips and manifest.input.clips  # an input says nothing: the default, clip
    assert manifest.batch == BatchProfile(min=1, opt=4, max=8)
    assert isinstance(manifest.spatial, Spatial) and manifest.spatial.receptive_field == 27
    assert isinstance(manifest.consistency, ConsistencyEntry)
    assert manifest.consistency.bounds["mean"] == Bound("both", 0.1, 0.9)
    assert manifest.consistency.measurement_input == "measurement"
    assert manifest.consistency.details["calibration"] == {"n": 500}


@pytest.mark.parametrize("fixture", ["deblur_artifact", "any_size_artifact", "ct_artifact"])
def test_every_part_reads_the_typed_entries_of_a_loaded_manifest(fixture, request):
    manifest = load_manifest(request.getfixturevalue(fixture))
    assert isinstance(manifest.input, IOSpec) and isinstance(manifest.output, IOSpec)
    assert isinstance(manifest.batch, BatchProfile)
    assert (manifest.spatial is None) == (fixture != "any_size_artifact")


def test_the_entries_are_frozen(any_size_artifact):
    manifest = load_manifest(any_size_artifact)
    for entry, field in ((manifest.input, "shape"), (manifest.batch, "max"), (manifest.spatial, "tile")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(entry, field, 1)


def test_a_profile_that_states_only_max_reads_min_1_and_opt_max(deblur_artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(deblur_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["batch"] = {"max": 8}
    (copy / "manifest.json").write_text(json.dumps(data))
    assert load_manifest(copy).batch == BatchProfile(min=1, opt=8, max=8)


def test_an_input_clip_of_null_is_refused(deblur_artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(deblur_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["output"]["clip"] = None
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="output clip must be true or false"):
        load_manifest(copy)
