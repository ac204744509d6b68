"""The programs built on the host library: the command-line host (NPY and raw float32 in, NPY out, scores
as JSON, one-line refusals), and the two examples docs/embedding.md shows, which must be the files CI
compiles and must run on an exported artifact."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recon.runtime import Reconstructor

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "embedding.md"
EXAMPLES = {
    "cpp": ROOT / "host" / "examples" / "reconstruct.cpp",
    "c": ROOT / "host" / "examples" / "reconstruct.c",
}


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)


def test_the_cli_writes_what_the_python_runtime_returns(host_build, host_artifacts, tmp_path):
    images = np.random.default_rng(0).uniform(0, 1, (2, 45, 71)).astype(np.float32)
    np.save(tmp_path / "in.npy", images)
    result = run(
        [
            host_build / "recon-host",
            host_artifacts["deblur"],
            tmp_path / "in.npy",
            "--out",
            tmp_path / "out.npy",
            "--threads",
            "1",
            "--tile",
            "40",
        ]
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with Reconstructor.from_artifact(host_artifacts["deblur"], backend="openvino", threads=1, tile=40) as rec:
        expected = rec.run(images)
        scores = rec.last_scores
    output = np.load(tmp_path / "out.npy")
    assert output.shape == expected.shape == tuple(report["shape"]) and report["plan"] == "tiled"
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-5)
    assert [s["flagged"] for s in report["scores"]] == [s.flagged for s in scores]
    assert [s["residual"] for s in report["scores"]] == pytest.approx([s.residual for s in scores], rel=1e-5)


def test_the_cli_takes_raw_float32_with_a_shape(host_build, host_artifacts, tmp_path):
    sinograms = np.random.default_rng(1).uniform(0, 1, (3, 1, 20, 46)).astype(np.float32)
    sinograms.tofile(tmp_path / "in.raw")
    result = run(
        [
            host_build / "recon-host",
            host_artifacts["ct"],
            tmp_path / "in.raw",
            "--shape",
            "3,1,20,46",
            "--out",
            tmp_path / "out.npy",
            "--threads",
            "1",
        ]
    )
    assert result.returncode == 0, result.stderr
    with Reconstructor.from_artifact(host_artifacts["ct"], backend="openvino", threads=1) as rec:
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), rec.run(sinograms), rtol=0, atol=1e-5)
    assert len(json.loads(result.stdout)["scores"]) == 3


def test_the_cli_refuses_in_one_line(host_build, host_artifacts, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 20, 45), np.float32))  # the CT graph takes 20 x 46
    result = run(
        [host_build / "recon-host", host_artifacts["ct"], tmp_path / "in.npy", "--out", tmp_path / "o.npy"]
    )
    assert result.returncode == 1 and not (tmp_path / "o.npy").exists()
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: sinogram shape (1, 20, 45) does not fit this artifact")
    result = run([host_build / "recon-host", tmp_path, tmp_path / "in.npy", "--out", tmp_path / "o.npy"])
    assert result.returncode == 1 and "no manifest.json; this is not a recon artifact" in result.stderr
    assert run([host_build / "recon-host", "--tile", "x"]).returncode == 2


@pytest.mark.parametrize("language", sorted(EXAMPLES))
def test_the_docs_show_the_examples_that_ci_compiles(language):
    shown = re.search(
        rf"<!-- host/examples/{EXAMPLES[language].name} -->\n```{language}\n(.*?)```", DOC.read_text(), re.S
    )
    assert shown, f"docs/embedding.md does not show host/examples/{EXAMPLES[language].name}"
    assert shown.group(1) == EXAMPLES[language].read_text()
    if language == "cpp":  # the "20 lines" promise
        assert len(EXAMPLES[language].read_text().splitlines()) <= 20


@pytest.mark.parametrize(
    ("example", "task", "images"), [("example_cpp", "ct", 8), ("example_c", "deblur", 2)]
)
def test_the_examples_reconstruct_a_batch_and_print_its_scores(
    host_build, host_artifacts, example, task, images
):
    result = run([host_build / example, host_artifacts[task]])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == images and all(line.startswith("residual ") for line in lines)


def test_a_host_links_with_the_documented_command_line(host_build, tmp_path):
    """docs/embedding.md's g++ line: the public header needs no OpenVINO, JSON or OpenSSL header."""
    line = re.search(r"^g\+\+ -std=c\+\+17 app\.cpp (.*) -o app$", DOC.read_text(), re.M)
    assert line, "docs/embedding.md lost its g++ line"
    flags = line.group(1).replace("$PWD", str(ROOT)).split()
    flags = [
        f.replace("-Ihost/", f"-I{ROOT}/host/").replace("-Lbuild/host", f"-L{host_build}") for f in flags
    ]
    result = run(["g++", "-std=c++17", EXAMPLES["cpp"], *flags, "-o", tmp_path / "app"], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    usage = run([tmp_path / "app"])
    assert usage.returncode == 2  # ran: the library was found through the rpath
