"""Each damaged or hostile artifact that recon.runtime refuses, the C++ host refuses with the same message:
the cases of tests/hardening/test_artifact_trust.py (malformed JSON, out-of-bounds fields, ONNX external data,
links, FIFOs, files longer than declared), plus unknown versions, hash mismatches, graphs whose I/O disagree
with the manifest, bad task configs, spatial and consistency entries; and random manifest edits (the
hardening fuzzer's) are refused or accepted alike, with the same message."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import test_artifact_trust as trust
from fuzzing import fuzz_settings
from host_ctypes import Host, HostError, verify
from hypothesis import given, note
from runtime_artifacts import build_artifact

from recon.runtime import ArtifactError, Reconstructor


@pytest.fixture(scope="module")
def conv_artifact(tmp_path_factory) -> Path:
    """The hardening tests' artifact: a 3x3 conv graph on 16x16 images, FP32 + FP16."""
    return build_artifact(tmp_path_factory.mktemp("host-conv") / "conv", "deblur", with_fp16=True)


@pytest.fixture
def artifact(conv_artifact, tmp_path) -> Path:
    return trust.artifact_copy(conv_artifact, tmp_path / "artifact")


def refusals(artifact: Path, host_lib) -> tuple[str, str]:
    """(recon.runtime's ArtifactError, the C++ host's ArtifactError), both on the openvino backend."""
    with pytest.raises(ArtifactError) as python_error:
        Reconstructor.from_artifact(artifact, backend="openvino", threads=1)
    with pytest.raises(HostError) as host_error:
        Host(host_lib, artifact).close()
    assert host_error.value.kind == "artifact", host_error.value
    return str(python_error.value), str(host_error.value)


def assert_same_refusal(artifact: Path, host_lib) -> None:
    python, host = refusals(artifact, host_lib)
    assert host == python


@pytest.mark.parametrize("case", sorted(trust.RAW_EDITS))
def test_malformed_json_is_refused_alike(artifact, host_lib, case):
    replacement, expected = trust.RAW_EDITS[case]
    path = artifact / "manifest.json"
    text = json.dumps(json.loads(path.read_text()))
    start = text.index('"batch": ')
    end = text.index("}", start) + 1
    path.write_text(text[:start] + replacement + text[end:])
    python, host = refusals(artifact, host_lib)
    pattern = r"manifest.json: .*" + f"({expected})"
    assert re.search(pattern, host), host
    if case != "nesting bomb":  # Python's parser hits its recursion limit there, the host its depth cap
        assert host == python


@pytest.mark.parametrize("case", sorted(trust.FIELD_EDITS))
def test_every_out_of_bounds_field_is_refused_alike(artifact, host_lib, case):
    edit, expected = trust.FIELD_EDITS[case]
    trust.edit_manifest(artifact, edit)
    python, host = refusals(artifact, host_lib)
    assert host == python
    assert re.search(r"manifest.json: .*(" + expected + ")", host), host


MORE_EDITS = {
    "format version 4": lambda d: d.update(format_version=4),
    "format version as text": lambda d: d.update(format_version="2"),
    "missing files": lambda d: d.pop("files"),
    "task unknown": lambda d: d.update(task="mri"),
    "input name renamed": lambda d: d["input"].update(name="x"),  # the graph's input is 'measurement'
    "input shape 32": lambda d: d["input"].update(shape=["batch", 1, 32, 32]),  # the graph says 16
    "output shape 8": lambda d: d["output"].update(shape=["batch", 1, 8, 8]),  # the graph says 16
    "clip not bool": lambda d: d["output"].update(clip="yes"),
    "kernel size 0": lambda d: d["task_config"].update(kernel_size=0),
    "task config unknown field": lambda d: d["task_config"].update(shape=3),
    "task config for ct": lambda d: d.update(task_config={"task": "ct", "image_size": 16}),
    "spatial overlap": lambda d: d.update(
        spatial={
            "whole_image": True,
            "min": 8,
            "opt": 16,
            "max": 64,
            "multiple_of": 1,
            "tile": 32,
            "overlap": 32,
        }
    ),
    "spatial unknown key": lambda d: d.update(spatial={"whole_image": True, "x": 1}),
    "consistency without file": lambda d: d.update(consistency={"file": "c.onnx"}),
    "precision unknown": lambda d: d["files"]["model.onnx"].update(precision="fp8"),
    "parity a list": lambda d: d.update(parity=[1]),
    "name empty": lambda d: d.update(name=""),
}


@pytest.mark.parametrize("case", sorted(MORE_EDITS))
def test_other_manifest_damage_is_refused_alike(artifact, host_lib, case):
    trust.edit_manifest(artifact, MORE_EDITS[case])
    assert_same_refusal(artifact, host_lib)


def test_a_changed_byte_is_a_hash_mismatch_for_both(artifact, host_lib):
    data = bytearray((artifact / "model.fp16.onnx").read_bytes())
    data[-1] ^= 1
    (artifact / "model.fp16.onnx").write_bytes(data)
    python, host = refusals(artifact, host_lib)
    assert host == python and "model.fp16.onnx: sha256 does not match the manifest" in host


def test_a_missing_file_is_refused_alike(artifact, host_lib):
    (artifact / "model.fp16.onnx").unlink()
    assert_same_refusal(artifact, host_lib)


@pytest.mark.parametrize("attribute", [False, True], ids=["initializer", "constant-attribute"])
def test_onnx_external_data_is_refused_alike(artifact, host_lib, attribute):
    trust.external_data_model(artifact, "w.bin", attribute)
    python, host = refusals(artifact, host_lib)
    assert host == python and "external data" in host


def test_links_are_refused_alike(artifact, host_lib, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(artifact / "model.onnx", outside)  # same bytes: the sha256 would match
    (artifact / "model.onnx").unlink()
    (artifact / "model.onnx").symlink_to(outside)
    python, host = refusals(artifact, host_lib)
    assert host == python and "model.onnx: is a symbolic link" in host


def test_a_report_linked_to_proc_is_refused_alike(artifact, host_lib):
    (artifact / "parity.json").symlink_to("/proc/self/pagemap")
    trust.edit_manifest(
        artifact,
        lambda d: d["files"].update({"parity.json": {"sha256": "0" * 64, "size": 0, "kind": "report"}}),
    )
    assert_same_refusal(artifact, host_lib)


def test_a_linked_or_oversized_manifest_is_refused_alike(artifact, host_lib, tmp_path):
    real = tmp_path / "real-manifest.json"
    shutil.move(artifact / "manifest.json", real)
    (artifact / "manifest.json").symlink_to(real)
    assert_same_refusal(artifact, host_lib)
    (artifact / "manifest.json").unlink()
    (artifact / "manifest.json").write_text(" " * (5 << 20) + real.read_text())
    assert_same_refusal(artifact, host_lib)


def test_a_fifo_is_refused_without_waiting(artifact, host_lib):
    (artifact / "model.onnx").unlink()
    os.mkfifo(artifact / "model.onnx")
    outcome: list[BaseException] = []
    reader = threading.Thread(
        target=lambda: outcome.append(pytest.raises(HostError, verify, host_lib, artifact).value)
    )
    reader.start()
    reader.join(30)
    if reader.is_alive():
        with open(artifact / "model.onnx", "wb"):
            pass
        pytest.fail("opening the FIFO blocked")
    assert "model.onnx: is not a regular file" in str(outcome[0])


def test_a_file_longer_than_declared_is_refused_alike(artifact, host_lib):
    with open(artifact / "model.onnx", "ab") as handle:
        handle.write(b"\0" * (1 << 20))
    python, host = refusals(artifact, host_lib)
    assert host == python and "holds more than" in host


def ascii_folded(message: str | None) -> str | None:
    """The message with escapes (\\x80, \\u3000) and non-ASCII characters each folded to one '?'."""
    if message is None:
        return None
    return re.sub(r"(\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})|[^\x20-\x7e])+", "?", message)


@pytest.mark.parametrize("which", ["conv", "exported-deblur"])
def test_random_manifest_edits_are_refused_or_accepted_alike(request, host_lib, tmp_path, which):
    """The hardening fuzzer's edits: load_manifest (with file checks) and the host's recon_verify agree, on
    the conv artifact and on a really exported one (spatial and consistency entries, task config)."""
    from recon.runtime.artifact.manifest import load_manifest

    if which == "conv":
        conv_artifact = request.getfixturevalue("conv_artifact")
    else:
        conv_artifact = request.getfixturevalue("host_artifacts")["deblur"]
    source = json.loads((conv_artifact / "manifest.json").read_text())
    counts = {"accepted": 0, "refused": 0}

    @fuzz_settings("quick", quick=80)
    @given(edits=trust.mutations())
    def fuzz(edits) -> None:
        note(str(edits))
        artifact = tmp_path / "a"
        shutil.rmtree(artifact, ignore_errors=True)
        trust.artifact_copy(conv_artifact, artifact)
        data = json.loads(json.dumps(source))
        trust.apply(data, edits)
        text = json.dumps(data)
        for token, raw in trust.RAW.items():
            text = text.replace(f'"{token}"', raw)
        (artifact / "manifest.json").write_text(text)
        try:
            load_manifest(artifact)
            python = None
        except ArtifactError as error:
            python = str(error)
        try:
            verify(host_lib, artifact)
            host = None
        except HostError as error:
            host = str(error)
        if python is not None and "recursion" in python:  # Python's parser hit its stack's limit, which
            # depends on the caller's depth; the host parses on (no recursion) and names the first problem
            assert host is not None and re.search(r"nested deeper|not valid JSON", host), host
        else:  # the host quotes values as Python's repr does, up to which characters it escapes
            assert (host is None) == (python is None) and ascii_folded(host) == ascii_folded(python)
        counts["refused" if host else "accepted"] += 1

    fuzz()
    assert counts["refused"] and counts["accepted"], counts
