"""Manifest format version 3 (golden outputs under golden/, lineage, TensorRT profile fields) read by the C++
host exactly as recon.runtime reads it: accepted alike, and every v3 damage refused with Python's message."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import test_artifact_trust as trust
from host_ctypes import Host, HostError, verify
from runtime_artifacts import build_artifact
from test_host_refusals import refusals as load_refusals

from recon.runtime import Reconstructor
from recon.runtime.artifact.manifest import load_manifest


@pytest.fixture(scope="module")
def golden_artifact(tmp_path_factory) -> Path:
    """The hardening tests' conv artifact (format 3) with a golden/inputs.npy listed as kind "golden"."""
    artifact = build_artifact(tmp_path_factory.mktemp("host-v3") / "conv", "deblur")
    (artifact / "golden").mkdir()
    np.save(artifact / "golden" / "inputs.npy", np.zeros((1, 1, 16, 16), np.float32))
    trust.edit_manifest(artifact, lambda d: d["files"].update({"golden/inputs.npy": entry(artifact)}))
    return artifact


def entry(artifact: Path, name: str = "golden/inputs.npy") -> dict:
    data = (artifact / name).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "kind": "golden"}


@pytest.fixture
def artifact(golden_artifact, tmp_path) -> Path:
    return trust.artifact_copy(golden_artifact, tmp_path / "artifact")


def refusals(artifact: Path, host_lib) -> tuple[str, str]:
    """(recon.runtime's ArtifactError, the C++ host's), loading on the openvino backend (as
    test_host_refusals compares them); the host's verify refuses with the same message."""
    python_message, host_message = load_refusals(artifact, host_lib)
    with pytest.raises(HostError) as verify_error:
        verify(host_lib, artifact)
    assert str(verify_error.value) == host_message
    return python_message, host_message


def test_a_format_3_artifact_with_golden_files_loads_in_both(artifact, host_lib):
    assert json.loads((artifact / "manifest.json").read_text())["format_version"] == 3
    load_manifest(artifact)
    verify(host_lib, artifact)
    Host(host_lib, artifact).close()


# what export/exporter.py writes into a file's "tensorrt" entry (only the TensorRT backends read it)
PROFILE_FIELDS = {
    "profiles": [{"min": [1, 1, 16, 16], "opt": [1, 1, 16, 16], "max": [4, 1, 16, 16]}],
    "footprint": {"bytes": 123, "note": "x"},
    "provider_profile": {"min": [1, 1, 16, 16]},
    "error": "no profile fits this GPU",
}


@pytest.mark.parametrize(
    "case",
    [
        "golden and lineage entries",
        "tensorrt profile fields on the onnx entry",
        "extra keys on a file entry",
        "format version 1 task config",
    ],
)
def test_v3_fields_are_accepted_alike(artifact, host_lib, case):
    edits = {
        "golden and lineage entries": lambda d: d.update(
            golden={"inputs": "golden/inputs.npy", "outputs": "golden/outputs.npy", "tolerances": {}},
            lineage={"git": "abc", "data": [1, 2]},
        ),
        "tensorrt profile fields on the onnx entry": lambda d: d["files"]["model.onnx"].update(
            tensorrt=PROFILE_FIELDS
        ),
        "extra keys on a file entry": lambda d: d["files"]["golden/inputs.npy"].update(PROFILE_FIELDS),
        "format version 1 task config": lambda d: d.update(
            format_version=1, physics={"task_config": d.pop("task_config")}
        ),
    }
    trust.edit_manifest(artifact, edits[case])
    load_manifest(artifact)
    Reconstructor.from_artifact(artifact, backend="openvino", threads=1)
    verify(host_lib, artifact)
    Host(host_lib, artifact).close()


EDITS = {
    "format version 4": lambda d: d.update(format_version=4),
    "format version 0": lambda d: d.update(format_version=0),
    "golden name two levels deep": lambda d: d["files"].update(
        {"golden/more/inputs.npy": d["files"]["golden/inputs.npy"]}
    ),
    "golden name empty": lambda d: d["files"].update({"golden/": d["files"]["golden/inputs.npy"]}),
    "golden name dot-dot": lambda d: d["files"].update({"golden/..": d["files"]["golden/inputs.npy"]}),
    "another folder": lambda d: d["files"].update({"other/inputs.npy": d["files"]["golden/inputs.npy"]}),
    "leading slash": lambda d: d["files"].update({"/golden/inputs.npy": d["files"]["golden/inputs.npy"]}),
    "double slash": lambda d: d["files"].update({"golden//inputs.npy": d["files"]["golden/inputs.npy"]}),
    "kind unknown": lambda d: d["files"]["golden/inputs.npy"].update(kind="weights"),
    "kind golden spelled Golden": lambda d: d["files"]["golden/inputs.npy"].update(kind="Golden"),
    "golden a list": lambda d: d.update(golden=[1]),
    "lineage a string": lambda d: d.update(lineage="main"),
    "golden file resized": lambda d: d["files"]["golden/inputs.npy"].update(size=3),
    "golden file rehashed": lambda d: d["files"]["golden/inputs.npy"].update(sha256="0" * 64),
    "golden file missing": lambda d: d["files"].update(
        {"golden/outputs.npy": d["files"]["golden/inputs.npy"]}
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_v3_damage_is_refused_alike(artifact, host_lib, case):
    trust.edit_manifest(artifact, EDITS[case])
    python, host = refusals(artifact, host_lib)
    assert host == python
    assert "manifest.json: " in host or "golden" in host, host


def test_a_golden_folder_that_is_a_link_is_refused_alike(artifact, host_lib, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(artifact / "golden", outside)  # same bytes behind the link: every sha256 would match
    (artifact / "golden").symlink_to(outside)
    python, host = refusals(artifact, host_lib)
    assert host == python
    tampered = "the file is damaged or tampered with, re-export the artifact"
    assert host == f"{artifact}/golden: is a symbolic link; {tampered}"


def test_a_golden_file_that_is_a_link_is_refused_alike(artifact, host_lib, tmp_path):
    outside = tmp_path / "inputs.npy"
    shutil.move(artifact / "golden" / "inputs.npy", outside)
    (artifact / "golden" / "inputs.npy").symlink_to(outside)
    python, host = refusals(artifact, host_lib)
    assert host == python and "golden/inputs.npy: is a symbolic link" in host
