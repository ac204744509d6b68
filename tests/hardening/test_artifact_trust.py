"""Rule 1: nothing outside the artifact folder is read, and every byte read is verified.

An artifact is untrusted until checked. These tests hand the runtime artifacts that try to make it read
elsewhere (ONNX external data, symbolic links, devices, FIFOs), read without end (a file longer than
declared, /proc/self/pagemap) or allocate from an unchecked number (batch 10**12, nesting bombs, 5000-digit
integers, NaN, ±1e308), and check that each is refused with an ArtifactError that names the file and the
field — the one exception type (with BackendError) that docs/embedding.md tells hosts to catch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fuzzing import SCALES, fuzz_settings
from hypothesis import given, note
from hypothesis import strategies as st
from runtime_artifacts import H, W

from recon.runtime import ArtifactError, BackendError, Reconstructor, load_manifest
from recon.runtime.io.files import sha256_of

BIN = Path(sys.executable).parent


def artifact_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_manifest(artifact: Path, edit) -> None:
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def relist(artifact: Path, name: str) -> None:
    """Re-hash `name` into the manifest, as an attacker who controls the whole folder would."""
    path = artifact / name
    edit_manifest(
        artifact,
        lambda d: d["files"][name].update(sha256=sha256_of(path), size=path.stat().st_size),
    )


@pytest.fixture
def artifact(hardening_artifacts, tmp_path) -> Path:
    return artifact_copy(hardening_artifacts["conv"], tmp_path / "artifact")


def load(artifact: Path) -> Reconstructor:
    return Reconstructor.from_artifact(artifact, backend="cpu", threads=1)


# -- ONNX external data ------------------------------------------------------------------------------------
def external_data_model(artifact: Path, location: str, attribute: bool = False) -> None:
    """Rewrite model.onnx so that its weights live in `location` (relative to wherever ORT looks)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(artifact / "model.onnx")
    if attribute:  # the weight as a Constant node's tensor attribute instead of an initializer
        weight = [t for t in model.graph.initializer if t.name == "w"][0]
        model.graph.initializer.remove(weight)
        constant = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(
            numpy_helper.to_array(weight), "w_value"))  # fmt: skip
        model.graph.node.insert(0, constant)
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=location, size_threshold=0, convert_attribute=True
    )
    onnx.save_model(model, artifact / "model.onnx")  # also writes the weights into artifact/location
    relist(artifact, "model.onnx")


@pytest.mark.parametrize("attribute", [False, True], ids=["initializer", "constant-attribute"])
def test_onnx_external_data_is_refused_wherever_the_weights_are(artifact, tmp_path, monkeypatch, attribute):
    external_data_model(artifact, "w.bin", attribute)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(artifact / "w.bin", tmp_path / "elsewhere" / "w.bin")  # ORT resolves against the cwd
    for cwd in (artifact, tmp_path / "elsewhere"):
        monkeypatch.chdir(cwd)
        with pytest.raises(ArtifactError, match=r"model.onnx: tensors \[.*'w.*external data.*re-export"):
            load(artifact)


def test_recon_inspect_does_not_say_verified_for_an_external_data_model(artifact):
    external_data_model(artifact, "w.bin")
    result = subprocess.run(
        [str(BIN / "recon"), "inspect", str(artifact)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "external data" in result.stderr, result.stdout + result.stderr


def test_onnxruntime_prints_no_log_lines_of_its_own_before_recons_error(hardening_artifacts, tmp_path):
    import onnx
    from onnx import numpy_helper

    artifact = artifact_copy(hardening_artifacts["ct"], tmp_path / "ct")
    model = onnx.load(artifact / "model.onnx")  # a Reshape onnxruntime refuses, behind a valid sha256
    shape = next(t for t in model.graph.initializer if t.name == "shape")
    shape.CopyFrom(numpy_helper.from_array(np.array([-1, -1, 8, 8], np.int64), "shape"))
    onnx.save(model, artifact / "model.onnx")
    relist(artifact, "model.onnx")
    np.save(tmp_path / "s.npy", np.zeros((6, 10), np.float32))
    result = subprocess.run(
        [str(BIN / "recon-run"), str(artifact), str(tmp_path / "s.npy"), "--out", str(tmp_path / "o"),
         "--backend", "cpu"],  # onnxruntime's own logging is what is under test
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "[E:onnxruntime" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    # onnxruntime refuses the graph when it loads it (its own ERROR log would come first without recon's
    # session log level): one line from recon, naming the file
    assert line.startswith(f"error: {artifact / 'model.onnx'}: onnxruntime cannot load it")


# -- links, devices, FIFOs, files longer than declared -------------------------------------------------------
def test_a_model_linked_to_a_file_outside_the_folder_is_refused(artifact, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(artifact / "model.onnx", outside)  # same bytes: the sha256 would match
    (artifact / "model.onnx").unlink()
    (artifact / "model.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match=r"model.onnx: is a symbolic link"):
        load(artifact)


def test_a_report_linked_to_proc_with_size_zero_is_refused_at_once(artifact):
    (artifact / "parity.json").symlink_to("/proc/self/pagemap")
    edit_manifest(
        artifact,
        lambda d: d["files"].update(
            {"parity.json": {"sha256": "0" * 64, "size": 0, "kind": "report"}}
        ),  # fmt: skip
    )
    with pytest.raises(ArtifactError, match=r"parity.json: is a symbolic link"):
        load_manifest(artifact)


def test_a_fifo_in_place_of_a_file_is_refused_without_waiting_for_a_writer(artifact):
    (artifact / "model.onnx").unlink()
    os.mkfifo(artifact / "model.onnx")
    result: list[BaseException] = []
    reader = threading.Thread(
        target=lambda: result.append(pytest.raises(ArtifactError, load, artifact).value)
    )
    reader.start()
    reader.join(30)
    if reader.is_alive():  # unblock the thread so the test run can end
        with open(artifact / "model.onnx", "wb"):
            pass
        pytest.fail("opening the FIFO blocked")
    assert "not a regular file" in str(result[0])


def test_a_file_longer_than_declared_is_refused_after_reading_one_byte_more(artifact):
    with open(artifact / "model.onnx", "ab") as handle:
        handle.write(b"\0" * (1 << 20))
    with pytest.raises(ArtifactError, match=r"model.onnx: holds more than \d+ bytes, expected"):
        load_manifest(artifact)


def test_a_manifest_that_is_a_link_or_too_large_is_refused(artifact, tmp_path):
    real = tmp_path / "real-manifest.json"
    shutil.move(artifact / "manifest.json", real)
    (artifact / "manifest.json").symlink_to(real)
    with pytest.raises(ArtifactError, match=r"manifest.json: is a symbolic link"):
        load_manifest(artifact)
    (artifact / "manifest.json").unlink()
    (artifact / "manifest.json").write_text(" " * (5 << 20) + real.read_text())
    with pytest.raises(ArtifactError, match=r"manifest.json: larger than \d+ bytes"):
        load_manifest(artifact)


# -- numbers and structure of the manifest ------------------------------------------------------------------
RAW_EDITS = {
    # (what replaces the batch profile's text, what the error must name)
    "nesting bomb": ('"batch": ' + "[" * 100000 + "]" * 100000, r"not valid JSON|nested deeper"),
    "5000-digit integer": (
        '"batch": {"max": ' + "9" * 5000 + "}",
        r"integer with 5000 digits",
    ),
    "NaN": ('"batch": {"max": NaN}', r"not valid JSON \(NaN is not a JSON number"),
    "overflowing float": ('"batch": {"max": 1e400}', r"not valid JSON \(number 1e400 overflows"),
    "deep but parseable": ('"batch": ' + "[" * 40 + "]" * 40, r"nested deeper than 32"),
}


@pytest.mark.parametrize("case", sorted(RAW_EDITS))
def test_malformed_json_is_one_artifact_error(artifact, case):
    replacement, expected = RAW_EDITS[case]
    path = artifact / "manifest.json"
    text = json.dumps(json.loads(path.read_text()))
    start = text.index('"batch": ')
    end = text.index("}", start) + 1
    path.write_text(text[:start] + replacement + text[end:])
    with pytest.raises(ArtifactError, match=r"manifest.json: .*" + f"({expected})"):
        load(artifact)


ONNX = ("files", "model.onnx")
FIELD_EDITS = {
    "batch 10**12": (
        lambda d: d.update(batch=dict.fromkeys(("min", "opt", "max"), 10**12)),
        r"batch profile",
    ),
    "batch 1024": (
        lambda d: d.update(batch=dict.fromkeys(("min", "opt", "max"), 1024)),
        r"batch profile.*<= 256",
    ),
    "batch 0": (lambda d: d.update(batch={"max": 0}), r"batch profile"),
    "batch unknown key": (lambda d: d["batch"].update(huge=5), r"batch profile"),
    "shape 10**6": (lambda d: d["input"].update(shape=["batch", 1, 10**6, 16]), r"input needs .* shape"),
    "output range 1e308": (lambda d: d["output"].update(value_range=[-1e308, 1e308]), r"output value_range"),
    "input range 1e39": (lambda d: d["input"].update(value_range=[0, 1e39]), r"input value_range"),
    "name traversal": (lambda d: d.update(name="../../etc"), r"name '../../etc' must be"),
    "sha256 not hex": (
        lambda d: d[ONNX[0]][ONNX[1]].update(sha256="zz"),
        r"files\['model.onnx'\].sha256",
    ),
    "size negative": (lambda d: d[ONNX[0]][ONNX[1]].update(size=-1), r"files\['model.onnx'\].size"),
    "size huge": (lambda d: d[ONNX[0]][ONNX[1]].update(size=2**62), r"files\['model.onnx'\].size"),
    "kind unknown": (lambda d: d[ONNX[0]][ONNX[1]].update(kind="python"), r"files\['model.onnx'\].kind"),
    "file outside": (lambda d: d["files"].update({"../model.onnx": {}}), r"file name '../model.onnx'"),
    "files as list": (lambda d: d.update(files=[]), r"'files' must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(FIELD_EDITS))
def test_every_out_of_bounds_field_is_an_artifact_error_naming_it(artifact, case):
    edit, expected = FIELD_EDITS[case]
    edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError, match=r"manifest.json: .*(" + expected + ")"):
        load(artifact)


def test_recon_inspect_json_on_a_nan_manifest_is_an_error_not_invalid_json(artifact):
    path = artifact / "manifest.json"
    path.write_text(
        path.read_text().replace('"value_range": [\n      0.0,', '"value_range": [\n      NaN,', 1)
    )
    assert "NaN" in path.read_text()
    result = subprocess.run(
        [str(BIN / "recon"), "inspect", str(artifact), "--json", "--no-verify"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == "" and "NaN is not a JSON number" in result.stderr


def test_an_extreme_output_range_is_refused_at_load_not_warned_about_on_every_run(artifact, recwarn):
    edit_manifest(artifact, lambda d: d["output"].update(value_range=[-1e308, 1e308]))
    with pytest.raises(ArtifactError, match=r"output value_range .* float32's range"):
        load(artifact)
    edit_manifest(artifact, lambda d: d["output"].update(value_range=[-3e38, 3e38]))
    with load(artifact) as rec:  # the widest range float32 holds runs without a warning
        rec.run(np.zeros((H, W), np.float32))
    assert not [w for w in recwarn if "overflow" in str(w.message)]


# -- what the embedding guide promises: only its documented exceptions escape -------------------------------
RAW = {
    "__raw_nan__": "NaN",
    "__raw_inf__": "-Infinity",
    "__raw_overflow__": "1e400",
    "__raw_digits__": "9" * 5000,
    "__raw_bomb__": "[" * 50000 + "]" * 50000,
    "__raw_deep__": "[" * 40 + "]" * 40,
}


def mutations() -> st.SearchStrategy:
    """An edit at a random path of the manifest: a value replaced by something hostile, or removed."""
    hostile = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.lists(st.integers(-5, 10**9), max_size=5),
        st.dictionaries(st.sampled_from(["min", "opt", "max", "x"]), st.integers(-3, 10**13), max_size=3),
        st.just({}),
        st.just([]),
        st.just("../../x"),
        st.just(10**30),
    )
    # raw JSON text that json.dumps would not write, drawn as often as all the rest together
    hostile = st.one_of(st.sampled_from(sorted(RAW)), hostile)
    return st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(["set", "delete"]), hostile), max_size=4)


def apply(data, edits) -> None:
    for index, action, value in edits:
        containers = []  # (parent, key) of every value in the document
        stack = [data]
        while stack:
            node = stack.pop()
            items = (
                node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            )
            for key, child in items:
                containers.append((node, key))
                stack.append(child)
        if not containers:
            return
        parent, key = containers[index % len(containers)]
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = value


@pytest.mark.parametrize("scale", SCALES)
def test_host_code_catches_every_load_failure_with_the_documented_exceptions(
    hardening_artifacts, tmp_path, scale
):
    """docs/embedding.md's host catches ArtifactError and BackendError around from_artifact; nothing else
    may escape, and each message is one line."""
    source = json.loads((hardening_artifacts["conv"] / "manifest.json").read_text())
    counts = {"loaded": 0, "refused": 0}

    @fuzz_settings(scale, quick=60)
    @given(edits=mutations())
    def fuzz(edits) -> None:
        note(str(edits))
        artifact = tmp_path / "a"
        shutil.rmtree(artifact, ignore_errors=True)
        artifact_copy(hardening_artifacts["conv"], artifact)
        data = json.loads(json.dumps(source))
        apply(data, edits)
        text = json.dumps(data)
        for token, raw in RAW.items():
            text = text.replace(f'"{token}"', raw)
        (artifact / "manifest.json").write_text(text)
        try:  # what the host in docs/embedding.md catches around from_artifact, and nothing else
            rec = load(artifact)
        except (ArtifactError, BackendError) as error:
            assert str(error) and "\n" not in str(error)
            counts["refused"] += 1
            return
        with rec:
            try:
                rec.run(np.zeros((1, 1, H, W), np.float32))
                counts["loaded"] += 1
            except ValueError as error:  # documented for run: the input does not fit what loaded
                assert "\n" not in str(error)
                counts["refused"] += 1

    fuzz()
    assert counts["refused"]


def test_a_ct_artifact_and_a_deblur_artifact_still_load(hardening_artifacts):
    for name in ("conv", "ct"):
        with load(hardening_artifacts[name]) as rec:
            assert rec.backend_name == "onnxruntime-cpu"
