"""recon-bench --compare-torch times the PyTorch pipeline an artifact came from, beside the runtime."""

from __future__ import annotations

import json

from click.testing import CliRunner

from recon.export import ExportOptions, export_artifact
from recon.runtime.artifact.manifest import load_manifest
from recon.runtime.cli.main import bench_command


def test_compare_torch_adds_an_eager_row_per_batch_and_prints_the_speed_up(tmp_path):
    artifact = tmp_path / "cnn-deblur"
    export_artifact(
        ExportOptions(
            model="cnn",
            random_init=True,
            task_overrides={"image_size": 32},
            engine="none",
            batch=(1, 2, 4),
            out=artifact,
        )
    )
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(
        bench_command,
        [
            str(artifact),
            "--batch",
            "1,2",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--compare-torch",
            "--json-out",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "speed-up over torch eager" in result.output
    rows = json.loads(report.read_text())["rows"]
    eager = [r for r in rows if r["backend"] == "torch-eager"]
    assert [r["batch_size"] for r in eager] == [1, 2]
    assert all(r["p50_ms"] > 0 for r in eager)


def test_the_torch_reference_of_a_random_init_artifact_has_the_exported_architecture(tmp_path):
    from recon.export.reference import torch_pipeline

    artifact = tmp_path / "rescnn-deblur"
    export_artifact(
        ExportOptions(
            model="rescnn",
            random_init=True,
            task_overrides={"image_size": 32},
            engine="none",
            batch=(1, 2, 4),
            out=artifact,
        )
    )
    pipeline, note = torch_pipeline(load_manifest(artifact))
    assert "fresh initialisation" in note
    network = pipeline.network if hasattr(pipeline, "network") else pipeline
    assert network.config["name"] == "rescnn"
