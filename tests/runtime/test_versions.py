"""Numbered versions in a model folder: the newest verified one runs, a pin overrides it, rollback is one
atomic rename (a crash leaves the old pin or the new), and a running host switches between calls, never
within one (issue 26). Tiny onnx.helper artifacts with golden outputs: fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from runtime_artifacts import MAX_BATCH, build_artifact, conv_reference

from recon.export.golden import write_golden
from recon.runtime import LiveModel, qualify
from recon.runtime.artifact.manifest import ArtifactError, load_manifest
from recon.runtime.reconstructor import Reconstructor
from recon.runtime.versions import KILL_ENV, PIN_FILE, ModelFolder

INPUTS = np.random.default_rng(3).random((2, 1, 16, 16), dtype=np.float32)
BIAS = {1: 0.05, 2: 0.30}  # version 2's graph adds another bias: its images differ everywhere


def add_version(folder: Path, version: int, verify: bool = True) -> Path:
    directory = build_artifact(folder / str(version))
    model = onnx.load(str(directory / "model.onnx"))
    bias = next(t for t in model.graph.initializer if t.name == "b")
    bias.CopyFrom(numpy_helper.from_array(np.array([BIAS[version]], np.float32), "b"))
    onnx.save(model, str(directory / "model.onnx"))
    manifest = load_manifest(directory, verify=False)
    manifest.add_file(directory, "model.onnx", "onnx", "fp32")
    manifest.save(directory)
    write_golden(directory, manifest, INPUTS, source="test", only=[("onnxruntime-cpu", "fp32")])
    if verify:
        assert qualify(f"{folder}@{version}", "cpu", "fp32")["passed"]
    return directory


def expected(images: np.ndarray, version: int) -> np.ndarray:
    """The conv + bias + ReLU graph of that version, in numpy (runtime_artifacts' weights)."""
    biased = conv_reference(images) if version == 1 else conv_reference(images, bias=BIAS[version])
    return np.clip(biased, 0, 1)


@pytest.fixture
def folder(tmp_path) -> Path:
    models = tmp_path / "models" / "m"
    add_version(models, 1)
    add_version(models, 2)
    return models


def test_the_newest_verified_version_runs_and_a_pin_or_at_n_chooses_another(folder):
    with Reconstructor.from_artifact(folder, backend="cpu") as rec:
        assert rec.version == 2 and rec.directory == folder / "2"
    with Reconstructor.from_artifact(f"{folder}@1", backend="cpu") as rec:
        assert rec.version == 1
    ModelFolder(folder).pin(1)
    with Reconstructor.from_artifact(folder, backend="cpu") as rec:
        assert rec.version == 1
        np.testing.assert_allclose(rec.run(INPUTS), expected(INPUTS, 1), atol=1e-5)


def test_a_new_version_is_not_run_until_verified_here(folder):
    shutil.copytree(folder / "2", folder / "3")  # deployed, not yet verified here
    assert ModelFolder(folder).active()[0] == 2
    assert qualify(folder, "cpu", "fp32")["version"] == 3  # a folder: its newest version is checked
    assert ModelFolder(folder).active()[0] == 3


def test_a_version_changed_after_verification_is_unverified_again(folder):
    manifest = load_manifest(folder / "2")
    manifest.model["note"] = "edited after verification"
    manifest.save(folder / "2")
    assert not ModelFolder(folder).verified(2)
    assert ModelFolder(folder).active() == (1, "version 1 is the newest verified one")


def test_a_failed_verification_takes_a_version_out_and_rollback_goes_back(folder):
    models = ModelFolder(folder)
    # version 2 breaks on purpose: its golden references no longer match its graph
    model = onnx.load(str(folder / "2" / "model.onnx"))
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(
            numpy_helper.to_array(model.graph.initializer[0]) * 2, model.graph.initializer[0].name
        )
    )
    onnx.save(model, str(folder / "2" / "model.onnx"))
    manifest = load_manifest(folder / "2", verify=False)
    manifest.add_file(folder / "2", "model.onnx", "onnx", "fp32")
    manifest.save(folder / "2")
    report = qualify(folder, "cpu", "fp32")
    assert not report["passed"] and "max |error|" in report["results"][0]["reason"]
    assert models.record(2)["passed"] is False and models.active()[0] == 1
    with pytest.raises(ArtifactError, match="no verified version older than 1"):
        models.rollback()


def test_rollback_pins_the_previous_verified_version(folder):
    assert ModelFolder(folder).rollback() == (2, 1)
    assert ModelFolder(folder).active() == (1, f"version 1 is pinned ({folder / PIN_FILE})")
    with pytest.raises(ArtifactError, match="version 3"):
        ModelFolder(folder).pin(3)


def test_an_unverified_version_is_pinned_only_with_force(folder):
    shutil.copytree(folder / "2", folder / "3")
    with pytest.raises(ArtifactError, match="not verified on this machine"):
        ModelFolder(folder).pin(3)
    ModelFolder(folder).pin(3, force=True)
    assert ModelFolder(folder).active()[0] == 3


def rollback_in_a_process(folder: Path, kill: bool) -> int:
    """`recon models rollback FOLDER` in a child process; `kill`: SIGKILLed before its rename."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV} | ({KILL_ENV: "pin"} if kill else {})
    code = "from recon.runtime.cli.main import main; main()"
    command = [sys.executable, "-c", code, "models", "rollback", str(folder)]
    return subprocess.run(command, env=env, capture_output=True, timeout=120).returncode


def test_a_crash_in_the_middle_of_rollback_leaves_the_old_pin_then_rollback_completes(folder):
    ModelFolder(folder).pin(2)
    before = (folder / PIN_FILE).read_bytes()
    assert rollback_in_a_process(folder, kill=True) == -9  # SIGKILLed between the temp file and the rename
    assert (folder / PIN_FILE).read_bytes() == before and ModelFolder(folder).active()[0] == 2
    assert rollback_in_a_process(folder, kill=False) == 0
    assert ModelFolder(folder).active()[0] == 1


def test_concurrent_runs_during_switches_never_mix_versions(folder):
    # a batch of 3 x MAX_BATCH + 1 images runs as four backend calls: a call that changed version midway
    # would return images of both
    images = np.random.default_rng(0).random((3 * MAX_BATCH + 1, 1, 16, 16), dtype=np.float32)
    references = {v: expected(images, v) for v in (1, 2)}
    seen: dict[int, int] = {1: 0, 2: 0}
    errors: list[str] = []
    stop = threading.Event()
    models = ModelFolder(folder)
    with LiveModel(folder, backend="cpu", precision="fp32", consistency=False) as live:

        def worker() -> None:
            while not stop.is_set():
                try:
                    out = live.run(images)
                except Exception as error:  # noqa: BLE001 - reported below
                    errors.append(repr(error))
                    return
                version = live.last_version
                if not np.allclose(out, references[version], atol=1e-5):
                    matches = [v for v in (1, 2) if np.allclose(out, references[v], atol=1e-5)]
                    errors.append(f"version {version} returned images of {matches or 'both/neither'}")
                    return
                seen[version] += 1

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for step in range(12):
            models.pin(1) if step % 2 == 0 else models.unpin()
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors[:3]
    assert seen[1] > 0 and seen[2] > 0, seen
