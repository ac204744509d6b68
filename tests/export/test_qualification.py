"""Qualification end to end (issue 26): every export carries golden outputs and its lineage, `recon verify`
passes on the exporting machine and exits 1 when the artifact was changed, `--version-of` adds a version
without touching the others, and the Triton repository takes the same numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recon.runtime.artifact.manifest import load_manifest
from recon.runtime.cli.main import main as recon_main
from recon.runtime.versions import ModelFolder


def recon(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(recon_main, list(args))
    return result.exit_code, result.output


def test_every_export_carries_golden_outputs_and_its_lineage(exported, saved_weights):
    artifact, summary = exported("cnn", "deblur")
    manifest = load_manifest(artifact)
    assert manifest.format_version == 3
    assert {"onnxruntime-cpu/fp32", "onnxruntime-cpu/fp16"} <= set(manifest.golden["tolerances"])
    inputs = np.load(artifact / "golden" / "inputs.npy")
    assert inputs.shape == (4, 1, 32, 32) and inputs.dtype == np.float32
    lineage = manifest.lineage
    card = json.loads(saved_weights("cnn", "deblur").with_suffix(".json").read_text())
    assert lineage["weights"] == {
        "source": "user",
        "sha256": card["sha256"],
        "file": f"{Path(card['file']).name}",
    }
    assert lineage["export_options"]["model"] == "cnn" and lineage["export_options"]["golden_images"] == 4
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(lineage["libraries"])
    assert lineage["recon_version"] and lineage["exported_at"]
    assert summary["golden"] == manifest.golden["tolerances"]


def test_recon_inspect_shows_the_lineage(exported):
    artifact, _ = exported("cnn", "deblur")
    code, out = recon("inspect", str(artifact))
    assert (
        code == 0 and "golden  golden/inputs.npy" in out and "made by recon" in out and "weights user" in out
    )


def test_recon_verify_passes_where_exported_and_exits_1_with_a_clear_report_when_changed(exported, tmp_path):
    artifact, _ = exported("cnn", "deblur")
    code, out = recon("verify", str(artifact), "--backend", "cpu")
    assert code == 0, out
    assert "PASS  onnxruntime-cpu/fp32" in out and "PASS  onnxruntime-cpu/fp16" in out
    assert "verification PASSED" in out and "flags:" in out and "onnxruntime" in out
    changed = Path(shutil.copytree(artifact, tmp_path / "changed"))
    references = np.load(changed / "golden" / "outputs.npy")
    np.save(changed / "golden" / "outputs.npy", references + np.float32(0.01))  # the validated images, moved
    manifest = load_manifest(changed, verify=False)
    manifest.add_file(changed, "golden/outputs.npy", "golden")
    manifest.save(changed)
    code, out = recon("verify", str(changed), "--backend", "cpu", "--precision", "fp32", "--json")
    report = json.loads(out)
    assert code == 1 and report["passed"] is False
    assert report["results"][0]["max_abs"] == pytest.approx(0.01, rel=0.01)
    assert "max |error|" in report["results"][0]["reason"]
    assert report["environment"]["cpu"] and "numpy" in report["environment"]["libraries"]


def test_recon_run_verify_refuses_to_reconstruct_with_an_artifact_that_fails(exported, tmp_path):
    from recon.runtime.cli.run import run_command

    artifact, _ = exported("cnn", "deblur")
    changed = Path(shutil.copytree(artifact, tmp_path / "changed"))
    np.save(changed / "golden" / "outputs.npy", np.load(changed / "golden" / "outputs.npy") * 0.5)
    manifest = load_manifest(changed, verify=False)
    manifest.add_file(changed, "golden/outputs.npy", "golden")
    manifest.save(changed)
    image = tmp_path / "in.npy"
    np.save(image, np.random.default_rng(0).random((32, 32), dtype=np.float32))
    runner = CliRunner()
    ok = runner.invoke(
        run_command, [str(artifact), str(image), "--out", str(tmp_path / "a"), "--verify", "-b", "cpu"]
    )
    assert ok.exit_code == 0 and (tmp_path / "a" / "in.npy").exists(), ok.output
    bad = runner.invoke(
        run_command, [str(changed), str(image), "--out", str(tmp_path / "b"), "--verify", "-b", "cpu"]
    )
    assert bad.exit_code == 1 and "verification failed" in bad.output
    assert not (tmp_path / "b" / "in.npy").exists()


def test_the_export_target_of_a_model_folder_is_its_next_version(tmp_path):
    from recon.export.exporter import ExportOptions

    folder = tmp_path / "models" / "m"
    assert ExportOptions(version_of=folder).target() == folder / "1"
    (folder / "1").mkdir(parents=True)
    (folder / "verification").mkdir()
    assert ExportOptions(version_of=folder).target() == folder / "2"


def test_the_triton_repository_adds_version_n_beside_the_others(exported, tmp_path):
    from recon.export.errors import ExportError
    from recon.export.triton import write_triton_repository

    artifact, _ = exported("cnn", "deblur")
    manifest = load_manifest(artifact).to_json()
    repo = tmp_path / "repo"
    for version in (1, 2):
        write_triton_repository(repo, artifact, manifest, flavour="native", version=version)
    first = (repo / "cnn-deblur" / "1" / "model.onnx").stat()
    assert sorted(p.name for p in (repo / "cnn-deblur").iterdir()) == ["1", "2", "config.pbtxt"]
    with pytest.raises(ExportError, match="never replaced"):
        write_triton_repository(repo, artifact, manifest, flavour="native", version=2)
    assert (repo / "cnn-deblur" / "1" / "model.onnx").stat().st_mtime_ns == first.st_mtime_ns


@pytest.mark.slow
def test_version_of_exports_the_next_version_without_touching_the_others(saved_weights, tmp_path):
    from recon.export.exporter import ExportOptions, export_artifact

    folder = tmp_path / "models" / "cnn-deblur"
    settings = {
        "engine": "none",
        "batch": (1, 2, 4),
        "threads": 1,
        "consistency_images": 0,
        "golden_images": 2,
    }

    def export() -> dict:
        weights = saved_weights("cnn", "deblur")
        options = ExportOptions(model="cnn", task="deblur", weights=weights, version_of=folder, **settings)
        options.task_overrides = {"image_size": 32}
        return export_artifact(options)

    assert export()["version"] == 1
    before = {p: p.stat().st_mtime_ns for p in (folder / "1").rglob("*")}
    assert export()["version"] == 2
    assert {p: p.stat().st_mtime_ns for p in (folder / "1").rglob("*")} == before
    assert ModelFolder(folder).versions() == [1, 2]
    code, out = recon("verify", str(folder), "--backend", "cpu", "--precision", "fp32")
    assert code == 0 and "version 2" in out and ModelFolder(folder).active()[0] == 2


def test_version_of_takes_neither_out_nor_force(tmp_path):
    from recon.export.cli import main

    for extra in (["--out", str(tmp_path / "a")], ["--force"]):
        args = ["--model", "cnn", "--random-init", "--version-of", str(tmp_path / "m"), *extra]
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 1
    assert not (tmp_path / "m").exists()
