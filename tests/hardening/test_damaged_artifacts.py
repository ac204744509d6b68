"""Damaged artifacts are refused with one clear sentence before any inference; what loads runs correctly.

Complements tests/runtime/test_backends.py (one sha256 mismatch, format version 99, one missing file,
TensorRT version/GPU rules) with: every listed file truncated, bit-flipped, overwritten or emptied; the
manifest damaged byte-wise and structurally; every format version that is not 1; a plan entry without a
TensorRT version; and ONNX files corrupted *behind* a matching sha256 (an export bug), which is what the
sha256 check guards against.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzing import SCALES, assert_clear, fuzz_settings
from hardening_artifacts import conv3x3
from hypothesis import given, note
from hypothesis import strategies as st
from runtime_artifacts import CONV_B, CONV_W, H, W, build_artifact

from recon.runtime import ArtifactError, BackendError, Reconstructor
from recon.runtime.artifact.manifest import Manifest, load_manifest

PLAN = {"version": "11.4.0", "compute_capability": "9.0", "version_compatible": False, "device_name": "H100"}
FILES = ["model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.plan", "parity.json"]
WHAT_TO_DO = r"re-export|rebuild|install"
X = np.random.default_rng(0).random((3, 1, H, W), dtype=np.float32)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """An artifact listing every kind of file: FP32/FP16/INT8 ONNX, a (fake) plan, a parity report."""
    artifact = build_artifact(
        tmp_path_factory.mktemp("whole") / "artifact", with_fp16=True, with_int8=True, plan=PLAN
    )
    manifest = load_manifest(artifact)
    (artifact / "parity.json").write_text(json.dumps({"passed": True}))
    manifest.add_file(artifact, "parity.json", "report")
    manifest.save(artifact)
    return artifact


def copy(artifact: Path, parent: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=parent)) / "artifact"
    shutil.copytree(artifact, target)
    return target


def damage(data: bytes, how: str, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    if how == "truncate":
        return bytes(out[: int(rng.integers(0, len(out)))])
    if how == "flip":
        for _ in range(int(rng.integers(1, 9))):
            position = int(rng.integers(0, len(out)))
            out[position] ^= 1 << int(rng.integers(0, 8))
        if out == data:  # the same bit flipped twice
            out[0] ^= 1
        return bytes(out)
    if how == "overwrite":
        start = int(rng.integers(0, len(out)))
        new = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        out[start : start + 16] = new[: len(out[start : start + 16])]
        return bytes(out) if bytes(out) != data else bytes(out[:-1])  # damage, whatever the draw
    if how == "append":
        return bytes(out) + b"\0"
    return b""  # emptied


def expected_output(reconstructor: Reconstructor) -> np.ndarray:
    weights = CONV_W[0, 0].astype(np.float64)
    out = conv3x3(X.astype(np.float64), weights, CONV_B[0])
    return out if reconstructor.value_range is None else np.clip(out, *reconstructor.value_range)


# -- every listed file, damaged any way --------------------------------------------------------------------
@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("how", ["truncate", "flip", "append", "empty"])
def test_a_damaged_file_is_refused_before_any_inference(whole, tmp_path, monkeypatch, name, how):
    artifact = copy(whole, tmp_path)
    path = artifact / name
    path.write_bytes(damage(path.read_bytes(), how, np.random.default_rng(1)))
    started = []
    monkeypatch.setattr("recon.runtime.reconstructor.select_backend", lambda *a, **k: started.append(1))
    with pytest.raises(ArtifactError) as info:
        Reconstructor.from_artifact(artifact, backend="cpu")
    message = "sha256 does not match" if how == "flip" else "holds .* bytes, expected .* damaged"
    assert_clear(info.value, rf"{name}: .*{message}")
    assert "re-export" in str(info.value) and not started


@pytest.mark.parametrize("name", FILES)
def test_a_missing_file_is_refused_by_name(whole, tmp_path, name):
    artifact = copy(whole, tmp_path)
    (artifact / name).unlink()
    with pytest.raises(ArtifactError, match=rf"{name}: listed in the manifest but missing; re-export"):
        Reconstructor.from_artifact(artifact, backend="cpu")


@pytest.mark.parametrize("scale", SCALES)
def test_random_damage_to_any_listed_file_is_refused_before_any_inference(
    whole, tmp_path, monkeypatch, scale
):
    started = []
    monkeypatch.setattr("recon.runtime.reconstructor.select_backend", lambda *a, **k: started.append(1))
    artifact = copy(whole, tmp_path)
    originals = {name: (artifact / name).read_bytes() for name in FILES}

    @fuzz_settings(scale, quick=60)
    @given(
        name=st.sampled_from(FILES),
        how=st.sampled_from(["truncate", "flip", "overwrite", "append", "empty"]),
        seed=st.integers(0, 2**32 - 1),
    )
    def fuzz(name: str, how: str, seed: int) -> None:
        data = damage(originals[name], how, np.random.default_rng(seed))
        (artifact / name).write_bytes(data)
        try:
            with pytest.raises(ArtifactError) as info:
                Reconstructor.from_artifact(artifact, backend="auto")
            assert_clear(info.value, rf"{name}: .*(sha256 does not match|holds .* bytes, expected)")
            assert not started
        finally:
            (artifact / name).write_bytes(originals[name])
        refused[name] = refused.get(name, 0) + 1

    refused: dict[str, int] = {}
    fuzz()
    print(f"\ndamaged listed files ({scale}): {sum(refused.values())} cases, all refused {refused}")


# -- the manifest ------------------------------------------------------------------------------------------
def test_a_manifest_whose_sha256_does_not_match_its_file_is_refused(whole, tmp_path):
    artifact = copy(whole, tmp_path)
    data = json.loads((artifact / "manifest.json").read_text())
    data["files"]["model.plan"]["sha256"] = "0" * 64
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"model.plan: sha256 does not match the manifest.*re-export"):
        Reconstructor.from_artifact(artifact, backend="cpu")


@pytest.mark.parametrize("version", [0, 4, 99, -1, "1", 1.0, 1.5, "2", 2.0, "3", None, True, [1], {"v": 1}])
def test_every_format_version_but_1_2_and_3_is_refused(whole, tmp_path, version):
    artifact = copy(whole, tmp_path)
    data = json.loads((artifact / "manifest.json").read_text())
    data["format_version"] = version
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="artifact format version .* is not known to this recon") as info:
        Reconstructor.from_artifact(artifact, backend="cpu")
    assert_clear(info.value, "re-export the model")


def mutations(data: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree."""
    paths = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            paths += mutations(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += mutations(value, (*path, index))
    return paths


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
JSON_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 2, 17, 10**20, 0.5, -0.0, math.nan, math.inf, "", "x",
                     "batch", "fp16", "onnx", [], {}, [0.0, 1.0], [1.0, 0.0], ["batch", 1, H, W]]),
    st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=5,
    ),
)  # fmt: skip


def apply(data: Any, path: tuple, operation: str, value: Any) -> Any:
    if not path:
        return value if operation != "delete" else {}
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if operation == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


def check_loads_and_runs_correctly_or_refuses(artifact: Path) -> str:
    """The property every damaged artifact must have; returns what happened."""
    try:
        reconstructor = Reconstructor.from_artifact(artifact, backend="auto", threads=1)
    except Exception as error:  # noqa: BLE001 - every exception is judged
        assert_clear(error)
        return "refused"
    with reconstructor:
        try:
            out = reconstructor.run(X)
        except Exception as error:  # noqa: BLE001
            assert_clear(error)
            return "refused at run"
        assert out.shape == X.shape and out.dtype == np.float32 and np.isfinite(out).all()
        atol = 3e-3 if reconstructor.precision == "fp16" else 1e-5
        np.testing.assert_allclose(out, expected_output(reconstructor), rtol=0, atol=atol)
    return "ran correctly"


@pytest.mark.parametrize("scale", SCALES)
def test_a_damaged_manifest_is_refused_or_still_describes_the_artifact(whole, tmp_path, scale):
    text = (whole / "manifest.json").read_text()
    paths = mutations(json.loads(text))
    outcomes: dict[str, int] = {}

    @fuzz_settings(scale, quick=60)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        artifact = copy(whole, tmp_path)
        if data.draw(st.booleans(), label="bytewise"):
            how = data.draw(st.sampled_from(["truncate", "flip", "overwrite", "empty"]))
            seed = data.draw(st.integers(0, 2**32 - 1))
            damaged = damage(text.encode(), how, np.random.default_rng(seed))
            (artifact / "manifest.json").write_bytes(damaged)
        else:
            path = data.draw(st.sampled_from(paths))
            operation = data.draw(st.sampled_from(["delete", "replace"]))
            value = data.draw(JSON_VALUES)
            manifest = apply(json.loads(text), path, operation if path else "replace", value)
            (artifact / "manifest.json").write_text(json.dumps(manifest))
        note((artifact / "manifest.json").read_text(errors="replace"))
        try:
            outcome = check_loads_and_runs_correctly_or_refuses(artifact)
        finally:
            shutil.rmtree(artifact.parent)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    print(f"\ndamaged manifest fuzz ({scale}): {sum(outcomes.values())} cases {outcomes}")
    assert outcomes.get("refused") and outcomes.get("ran correctly")


# -- ONNX corrupted behind a matching sha256 -------------------------------------------------------------
@pytest.mark.parametrize(
    ("scale", "which"),
    [("quick", "tiny"), pytest.param("full", "tiny", marks=pytest.mark.slow),
     pytest.param("full", "exported cnn", marks=pytest.mark.slow)],
)  # fmt: skip
def test_onnx_corrupted_behind_a_matching_sha256_loads_cleanly_or_is_refused(
    whole, request, tmp_path, scale, which, cpu_backend
):
    """What the sha256 check stands between: onnxruntime itself accepts many corrupted graphs.

    The manifest is re-hashed after the damage, as an export bug would. Then loading refuses it
    (ArtifactError), or it runs: outputs finite and shaped as promised, but the numbers may be anything.
    """
    artifact_dir = whole if which == "tiny" else request.getfixturevalue("exported_cnn")
    manifest = load_manifest(artifact_dir)
    size = manifest.input.shape[2]
    if not isinstance(size, int):  # an any-size export ("H"): the smallest size it takes whole
        size = max(manifest.spatial.min, 64)
    x = np.random.default_rng(0).random((3, 1, size, size), dtype=np.float32)
    with Reconstructor.from_artifact(artifact_dir, backend=cpu_backend, threads=1) as reference:
        expected = reference.run(x)
    outcomes: dict[str, int] = {}
    original = (artifact_dir / "model.onnx").read_bytes()

    def load_and_run(artifact: Path) -> str:
        try:
            reconstructor = Reconstructor.from_artifact(artifact, backend=cpu_backend, threads=1)
        except Exception as error:  # noqa: BLE001
            assert isinstance(error, (ArtifactError, BackendError)), f"{type(error).__name__}: {error}"
            assert_clear(error)
            return "refused"
        with reconstructor:
            try:
                out = reconstructor.run(x)
            except Exception as error:  # noqa: BLE001
                assert_clear(error)
                return "refused at run"
        assert out.shape == x.shape and np.isfinite(out).all()
        return "ran, same output" if np.allclose(out, expected, atol=1e-5) else "ran, different output"

    @fuzz_settings(scale, quick=40)
    @given(how=st.sampled_from(["truncate", "flip", "overwrite"]), seed=st.integers(0, 2**32 - 1))
    def fuzz(how: str, seed: int) -> None:
        artifact = copy(artifact_dir, tmp_path)
        (artifact / "model.onnx").write_bytes(damage(original, how, np.random.default_rng(seed)))
        manifest = load_manifest(artifact, verify=False)
        manifest.add_file(artifact, "model.onnx", "onnx", "fp32")
        manifest.save(artifact)
        try:
            outcome = load_and_run(artifact)
        finally:
            shutil.rmtree(artifact.parent)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    print(f"\nONNX ({which}) behind a matching sha256 ({scale}): {sum(outcomes.values())} cases {outcomes}")


# -- TensorRT plan entries ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**PLAN, "version": None}, "does not say which TensorRT version built the engine"),
        ({k: v for k, v in PLAN.items() if k != "version"}, "does not say which TensorRT version"),
        ({**PLAN, "version": "eleven"}, "does not say which TensorRT version"),
        ({**PLAN, "compute_capability": "x"}, "compute capability 'x' is malformed"),
        ({**PLAN, "version": "10.12.0"}, "built with TensorRT 10.12.0 and this is TensorRT 11.4.0"),
    ],
)
def test_plan_entries_that_cannot_be_matched_to_this_tensorrt_are_refused(entry, message):
    from recon.runtime.backends.tensorrt import check_engine_compatible

    with pytest.raises(ArtifactError, match=message) as info:
        check_engine_compatible(entry, "11.4.0", False, (9, 0))
    assert_clear(info.value, WHAT_TO_DO)


def test_a_plan_entry_that_is_not_an_object_is_refused_when_the_manifest_is_read(whole, tmp_path):
    artifact = copy(whole, tmp_path)
    data = json.loads((artifact / "manifest.json").read_text())
    data["files"]["model.plan"]["tensorrt"] = "11.4.0"
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"files\['model.plan'\].tensorrt must be null or an object"):
        Manifest.from_json(json.loads((artifact / "manifest.json").read_text()))


def test_auto_on_a_machine_without_a_gpu_says_why_the_plan_was_skipped(whole):
    with Reconstructor.from_artifact(whole, threads=1) as reconstructor:
        assert reconstructor.backend_name in ("onnxruntime-cpu", "openvino")  # the CPU engine auto picks
        assert "TensorRT plan not usable" in reconstructor.backend_reason
        np.testing.assert_allclose(reconstructor.run(X), expected_output(reconstructor), atol=1e-5)
