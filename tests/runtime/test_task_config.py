"""The task configuration: one typed object per task, validated, with an exact JSON round trip."""

from __future__ import annotations

import json
import math

import pytest

from recon.runtime.artifact.task_config import (
    CTTask,
    DeblurTask,
    default_n_detectors,
    task_config,
    task_config_from_json,
)


@pytest.mark.parametrize(
    "cfg",
    [
        DeblurTask(),
        DeblurTask(kernel_kind="gaussian", variance=2.5, kernel_size=9, noise_level=0.0),
        CTTask(),
        CTTask(image_size=512, n_views=180, detector_spacing=0.5, filter="hann"),
    ],
)
def test_a_task_config_survives_a_json_round_trip_exactly(cfg):
    assert task_config_from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


@pytest.mark.parametrize(
    ("task", "field", "value"),
    [
        ("ct", "n_views", 0),
        ("ct", "n_detectors", -3),
        ("ct", "detector_spacing", 0.0),
        ("ct", "angle_range", 7.0),
        ("ct", "filter", "butterworth"),
        ("ct", "image_size", 256.0),
        ("ct", "oversample", True),
        ("deblur", "kernel_kind", "box"),
        ("deblur", "kernel_size", 0),
        ("deblur", "variance", -1.0),
        ("deblur", "angle", math.nan),
        ("deblur", "noise_level", -0.1),
    ],
)
def test_an_invalid_field_is_a_value_error_that_names_it(task, field, value):
    with pytest.raises(ValueError, match=f"{task} task config: {field} must be"):
        task_config(task, **{field: value})


def test_the_detector_count_follows_one_rule_and_a_new_size_re_derives_it():
    assert CTTask().n_detectors == default_n_detectors(256) == 363
    bigger = CTTask().with_overrides(image_size=512, n_views=180)
    assert (bigger.n_views, bigger.n_detectors) == (180, default_n_detectors(512)) == (180, 725)
    assert CTTask().with_overrides(detector_spacing=2.0).n_detectors == math.ceil(math.sqrt(2) * 128)
    assert CTTask().with_overrides(image_size=512, n_detectors=800).n_detectors == 800


def test_command_line_strings_are_converted_to_the_field_types():
    cfg = task_config("ct", image_size="128", detector_spacing="0.5", filter="hann")
    assert (cfg.image_size, cfg.detector_spacing, cfg.filter) == (128, 0.5, "hann")
    with pytest.raises(ValueError, match="n_views must be a number"):
        task_config("ct", n_views="many")


def test_unknown_fields_and_tasks_are_refused():
    with pytest.raises(ValueError, match="unknown ct option"):
        task_config("ct", kernel_size=3)
    with pytest.raises(ValueError, match="unknown field"):
        task_config_from_json({"task": "deblur", "n_views": 60})
    with pytest.raises(ValueError, match="task must be one of"):
        task_config_from_json({"task": ["ct"]})


def test_cards_written_before_the_typed_config_are_still_read():
    legacy = {"task": "ct", "image_size": 256, "n_angles": 60, "n_detectors": 363, "angle_range": math.pi,
              "filter": "ram-lak", "noise_level": 0.01, "oversample": 2}  # fmt: skip
    assert task_config_from_json(legacy) == CTTask()
    assert task_config_from_json({"task": "deblur", "kind": "gaussian"}).kernel_kind == "gaussian"


def test_geometry_is_what_a_trained_network_depends_on():
    assert CTTask().with_overrides(noise_level=0.05).geometry() == CTTask().geometry()
    assert CTTask().with_overrides(n_views=180).geometry() != CTTask().geometry()
    assert DeblurTask().with_overrides(image_size=512).geometry() == DeblurTask().geometry()
    assert DeblurTask().with_overrides(angle=10).geometry() != DeblurTask().geometry()
