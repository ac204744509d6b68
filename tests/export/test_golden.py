"""Golden outputs: they pass on the machine that wrote them and fail, with a clear report, when an input
file, a weight or the precision is changed on purpose (issue 26). Tiny onnx.helper artifacts: fast."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from runtime_artifacts import build_artifact  # noqa: E402

from recon.export.golden import FLOOR, write_golden  # noqa: E402
from recon.runtime.artifact.manifest import ArtifactError, load_manifest  # noqa: E402
from recon.runtime.reconstructor import Reconstructor  # noqa: E402

INPUTS = np.random.default_rng(5).random((3, 1, 16, 16), dtype=np.float32)


def golden_artifact(directory: Path, **options) -> Path:
    build_artifact(directory, with_fp16=True, **options)
    write_golden(directory, load_manifest(directory), INPUTS, source="test inputs")
    return directory


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return golden_artifact(tmp_path_factory.mktemp("golden") / "a")


def copy(artifact: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(artifact, tmp_path / "copy"))


def rehash(artifact: Path, name: str) -> None:
    """List a changed file's new sha256: a change made on purpose (or by someone who rehashed it)."""
    manifest = load_manifest(artifact, verify=False)
    manifest.add_file(artifact, name, manifest.files[name].kind, manifest.files[name].precision)
    manifest.save(artifact)


def verify(artifact: Path, backend: str = "onnxruntime-cpu", precision: str = "fp32"):
    with Reconstructor.from_artifact(artifact, backend=backend, precision=precision) as rec:
        return rec.verify()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_golden_outputs_pass_on_the_machine_that_wrote_them(written, cpu_backend, precision):
    result = verify(written, cpu_backend, precision)
    assert result.passed, result.line()
    assert result.images == 3 and result.max_abs <= result.tolerance["max_abs"]
    assert result.line().startswith(f"PASS  {cpu_backend}/{precision}")


def test_the_manifest_lists_the_golden_files_hashed_and_a_tolerance_per_backend_and_precision(written):
    manifest = load_manifest(written)
    assert {manifest.files[n].kind for n in ("golden/inputs.npy", "golden/outputs.npy")} == {"golden"}
    tolerances = manifest.golden["tolerances"]
    assert {"onnxruntime-cpu/fp32", "onnxruntime-cpu/fp16"} <= set(tolerances)
    assert tolerances["onnxruntime-cpu/fp32"]["max_abs"] == FLOOR["fp32"]  # measured 0 here: the floor
    assert manifest.format_version == 3 and manifest.golden["reference"]["precision"] == "fp32"
    assert [s["flagged"] for s in manifest.golden["scores"] or []] in ([], [False] * 3)


def test_a_changed_input_file_fails_with_the_error_and_the_image(written, tmp_path):
    artifact = copy(written, tmp_path)
    changed = INPUTS.copy()
    changed[1] += 0.05  # one golden image, changed on purpose
    buffer = io.BytesIO()
    np.save(buffer, changed)
    (artifact / "golden/inputs.npy").write_bytes(buffer.getvalue())
    with pytest.raises(ArtifactError, match="golden/inputs.npy: sha256 does not match"):
        verify(artifact)  # unlisted change: refused before anything runs
    rehash(artifact, "golden/inputs.npy")
    result = verify(artifact)
    assert not result.passed
    assert result.worst_image == 1 and result.max_abs > 0.01
    assert "max |error|" in result.reason and "(image 1)" in result.reason
    assert result.line().startswith("FAIL  onnxruntime-cpu/fp32")


def test_a_changed_weight_fails_verification(written, tmp_path):
    artifact = copy(written, tmp_path)
    model = onnx.load(str(artifact / "model.onnx"))
    weight = next(t for t in model.graph.initializer if t.name == "w")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01), "w"))
    onnx.save(model, str(artifact / "model.onnx"))
    rehash(artifact, "model.onnx")
    result = verify(artifact)
    assert not result.passed and result.max_abs > FLOOR["fp32"], result.line()


def test_a_lower_precision_posing_as_fp32_fails_the_fp32_tolerance(written, tmp_path):
    artifact = copy(written, tmp_path)
    (artifact / "model.onnx").write_bytes((artifact / "model.fp16.onnx").read_bytes())
    rehash(artifact, "model.onnx")
    result = verify(artifact, precision="fp32")
    assert not result.passed, result.line()
    assert result.tolerance["key"] == "onnxruntime-cpu/fp32"


def test_a_precision_measured_nowhere_has_no_tolerance_and_fails(written, tmp_path):
    artifact = copy(written, tmp_path)
    data = json.loads((artifact / "manifest.json").read_text())
    data["golden"]["tolerances"] = {
        k: v for k, v in data["golden"]["tolerances"].items() if not k.endswith("/fp16")
    }
    (artifact / "manifest.json").write_text(json.dumps(data))
    result = verify(artifact, precision="fp16")
    assert not result.passed and "holds no tolerance for fp16" in result.reason


def test_another_backend_borrows_the_loosest_tolerance_of_its_precision(written, tmp_path):
    artifact = copy(written, tmp_path)
    data = json.loads((artifact / "manifest.json").read_text())
    data["golden"]["tolerances"] = {
        k: v for k, v in data["golden"]["tolerances"].items() if k.startswith("onnxruntime-cpu/")
    }
    (artifact / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(artifact)
    from recon.runtime.artifact.golden import load_golden

    tolerance = load_golden(artifact, manifest).tolerance("tensorrt", "fp16")
    assert tolerance is not None and tolerance.key == "onnxruntime-cpu/fp16"


def test_an_artifact_without_golden_outputs_cannot_pass(tmp_path):
    artifact = build_artifact(tmp_path / "old")  # as recon before format 3 wrote them
    result = verify(artifact)
    assert not result.passed and "carries no golden outputs" in result.reason


@pytest.mark.parametrize("name", ["golden/../model.onnx", "golden/sub/x.npy", "other/x.npy", "/golden/x"])
def test_only_plain_names_inside_the_golden_folder_are_listed(written, tmp_path, name):
    artifact = copy(written, tmp_path)
    data = json.loads((artifact / "manifest.json").read_text())
    data["files"][name] = data["files"].pop("golden/inputs.npy")
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="must be a plain name inside the artifact"):
        load_manifest(artifact)


def test_a_golden_folder_that_is_a_link_is_refused(written, tmp_path):
    artifact = copy(written, tmp_path)
    (artifact / "golden").rename(tmp_path / "elsewhere")
    (artifact / "golden").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match="golden: is a symbolic link"):
        load_manifest(artifact)
