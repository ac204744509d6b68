"""Killing recon-export at any step leaves no artifact (or the old one, whole), and a re-run succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from recon.export.artifact import KILL_ENV

ARGS = ["--model", "cnn", "--random-init", "--fp16", "--engine", "none", "--size", "32", "--batch", "1:2:4",
        "--threads", "1", "--quiet"]  # fmt: skip


def export(out, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_at:
        env[KILL_ENV] = kill_at
    command = [sys.executable, "-m", "recon.export.cli", *ARGS, "--out", str(out), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def assert_killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_a_kill_midway_leaves_no_artifact_and_a_rerun_succeeds(tmp_path):
    target = tmp_path / "art"
    assert_killed(export(target, kill_at="parity"))
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".art.partial-")]  # the crash's leftovers

    from recon.export.cli import main

    with pytest.raises(SystemExit) as done:  # the re-run, in-process (a subprocess costs a torch import)
        main([*ARGS, "--out", str(target)])
    assert done.value.code == 0
    assert json.loads((target / "manifest.json").read_text())["parity"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # the re-run swept the dead temp folder


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["onnx", "fp16", "manifest", "before-commit"])
def test_a_kill_at_each_step_leaves_no_artifact(tmp_path, stage):
    assert_killed(export(tmp_path / "art", kill_at=stage))
    assert not (tmp_path / "art").exists()


@pytest.mark.slow
def test_a_kill_while_replacing_keeps_a_whole_artifact_old_or_new(tmp_path):
    from recon.runtime.artifact.manifest import load_manifest

    target = tmp_path / "art"
    assert export(target, "--seed", "1").returncode == 0
    old = (target / "manifest.json").read_text()

    assert_killed(export(target, "--force", "--seed", "2", kill_at="before-commit"))
    assert (target / "manifest.json").read_text() == old  # untouched
    load_manifest(target)

    assert_killed(export(target, "--force", "--seed", "2", kill_at="after-swap"))
    load_manifest(target)  # the new one, whole: every file matches its sha256
    assert (target / "manifest.json").read_text() != old

    assert export(target, "--force").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
