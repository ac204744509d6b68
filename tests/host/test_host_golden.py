"""The host's own `verify` of an artifact's golden set (C++ Reconstructor::verify through the C ABI's
recon_verify_golden, and `recon-host --verify`) against what `recon verify` (runtime/verify.py) reports for
openvino on the same artifact: pass/fail, the numbers, and the refusals of a damaged golden set."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import test_artifact_trust as trust
from host_ctypes import Host, HostError

from recon.runtime import ArtifactError, Reconstructor


@pytest.fixture
def exported(host_artifacts, tmp_path):
    return trust.artifact_copy(host_artifacts["deblur"], tmp_path / "deblur")


def python_verify(artifact, precision="fp32"):
    return Reconstructor.from_artifact(artifact, backend="openvino", precision=precision, threads=1).verify()


def test_the_golden_set_passes_alike(exported, host_lib, host_build):
    python = python_verify(exported)
    with Host(host_lib, exported, precision="fp32") as host:
        passed, max_abs, psnr, line = host.verify_golden()
    assert python.passed and passed, (python.line(), line)
    assert max_abs == pytest.approx(python.max_abs, abs=1e-6)
    assert math.isinf(psnr) == math.isinf(python.psnr) and (math.isinf(psnr) or abs(psnr - python.psnr) < 0.5)
    assert line.startswith("PASS  openvino/fp32: max |error| ") and line.endswith("within tolerance")
    cli = subprocess.run(
        [str(host_build / "recon-host"), str(exported), "--verify", "--precision", "fp32", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0 and cli.stdout.strip() == line, cli


def test_changed_references_fail_alike(exported, host_lib, host_build):
    """Outputs the engine no longer reproduces (references shifted, re-hashed as an attacker would)."""
    path = exported / "golden" / "outputs.npy"
    np.save(path, np.load(path) + np.float32(0.05))
    trust.relist(exported, "golden/outputs.npy")
    python = python_verify(exported)
    with Host(host_lib, exported, precision="fp32") as host:
        passed, _, _, line = host.verify_golden()
    assert not python.passed and not passed
    assert line == python.line()
    cli = subprocess.run([str(host_build / "recon-host"), str(exported), "--verify", "--precision", "fp32"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert cli.returncode == 1 and cli.stdout.startswith("FAIL  openvino/fp32"), cli


def test_no_golden_set_is_not_a_pass(exported, host_lib):
    trust.edit_manifest(exported, lambda d: d.pop("golden"))
    python = python_verify(exported)
    with Host(host_lib, exported, precision="fp32") as host:
        passed, max_abs, _, line = host.verify_golden()
    assert not passed and math.isnan(max_abs) and line == python.line()


GOLDEN_EDITS = {
    "no tolerances": lambda g: g.update(tolerances={}),
    "tolerance key": lambda g: g.update(tolerances={"openvino": {"max_abs": 1, "min_psnr": 1}}),
    "inputs not golden": lambda g: g.update(inputs="model.onnx"),
    "outputs unlisted": lambda g: g.update(outputs="golden/other.npy"),
    "scores a string": lambda g: g.update(scores="none"),
    "max_abs negative": lambda g: g["tolerances"].update({"openvino/fp32": {"max_abs": -1, "min_psnr": 1}}),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_EDITS))
def test_a_damaged_golden_entry_is_refused_alike(exported, host_lib, case):
    trust.edit_manifest(exported, lambda d: GOLDEN_EDITS[case](d["golden"]))
    with pytest.raises(ArtifactError) as python:
        python_verify(exported)
    with Host(host_lib, exported, precision="fp32") as host, pytest.raises(HostError) as error:
        host.verify_golden()
    assert error.value.kind == "artifact" and str(error.value) == str(python.value)


def test_a_golden_array_of_the_wrong_type_is_refused_alike(exported, host_lib):
    np.save(exported / "golden" / "inputs.npy", np.zeros((2, 3), np.float64))
    trust.relist(exported, "golden/inputs.npy")
    with pytest.raises(ArtifactError) as python:
        python_verify(exported)
    with Host(host_lib, exported, precision="fp32") as host, pytest.raises(HostError) as error:
        host.verify_golden()
    assert str(error.value) == str(python.value)
    assert "golden arrays must be finite float32 (N, 1, H, W)" in str(error.value)
