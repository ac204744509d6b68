"""Parity maths: run first, compare afterwards, tolerances as arguments."""

from __future__ import annotations

import math

import numpy as np

from recon.export.parity import Tolerance, compare, compare_outputs


def test_metrics_of_a_known_difference():
    ref = np.full((2, 1, 4, 4), 0.5, np.float32)
    cand = ref.copy()
    cand[0, 0, 0, 0] += 0.1
    m = compare_outputs(ref, cand)
    assert math.isclose(m["max_abs"], 0.1, rel_tol=1e-5)
    assert math.isclose(m["psnr"], 10 * math.log10(32 / 0.01), abs_tol=1e-2)
    assert m["finite"]


def test_psnr_is_measured_on_the_clipped_range_and_identical_outputs_pass():
    ref = np.linspace(-0.5, 1.5, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    assert compare_outputs(ref, ref)["psnr"] == 999.0
    shifted = ref + np.where(ref > 1, 0.3, 0).astype(np.float32)  # differences only above the range
    assert compare_outputs(ref, shifted)["psnr"] == 999.0 and compare_outputs(ref, shifted)["max_abs"] > 0.29


def test_tolerances_decide_per_batch_and_say_why():
    ref = np.zeros((1, 1, 2, 2), np.float32)
    outputs = {"torch": {1: ref, 3: ref}, "ort": {1: ref + 1e-5, 3: ref + 1e-3}}
    result = compare(outputs, "torch", "ort", Tolerance(atol=1e-4))
    assert not result.passed and "batch 3" in result.reason and "batch 1" not in result.reason
    assert result.per_batch[1]["passed"] and not result.per_batch[3]["passed"]
    assert compare(outputs, "torch", "ort", Tolerance(atol=1e-2)).passed
    assert not compare(outputs, "torch", "ort", Tolerance(min_psnr=70)).passed


def test_non_finite_outputs_always_fail():
    ref = np.zeros((1, 1, 2, 2), np.float32)
    bad = ref.copy()
    bad[0, 0, 0, 0] = np.nan
    result = compare({"a": {1: ref}, "b": {1: bad}}, "a", "b", Tolerance(min_psnr=0))
    assert not result.passed and "non-finite" in result.reason
