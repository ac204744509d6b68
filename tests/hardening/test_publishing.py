"""Rule 3 (issue 23): no output is ever replaced or left half-written.

Publishing is a no-replace primitive (a hard link, or renameat2(RENAME_NOREPLACE)): a file another process
creates while recon-run works is that file's failure, not overwritten. SIGTERM and SIGHUP stop a run as
SIGINT does: no temporary file left, the summary printed, the exit status 128 + the signal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fuzzing import recon_run
from PIL import Image
from runtime_artifacts import H, W

from recon.runtime.cli import run as run_cli
from recon.runtime.io.files import TargetExists, publish


def _pngs(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for k in range(n):
        paths.append(folder / f"{k:02d}.png")
        Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(paths[-1])
    return paths


def test_publish_never_replaces_an_existing_name(tmp_path):
    (tmp_path / "tmp").write_bytes(b"new")
    (tmp_path / "target").write_bytes(b"someone else's")
    with pytest.raises(TargetExists, match="already exists"):
        publish(tmp_path / "tmp", tmp_path / "target")
    assert (tmp_path / "target").read_bytes() == b"someone else's"
    publish(tmp_path / "tmp", tmp_path / "other")
    assert (tmp_path / "other").read_bytes() == b"new" and not (tmp_path / "tmp").exists()


def test_a_file_another_process_creates_during_the_run_is_reported_not_replaced(
    hardening_artifacts, tmp_path, monkeypatch
):
    """The existence check at start cannot see a file made later; the publish itself must refuse it."""
    inputs = _pngs(tmp_path / "in", 2)
    out = tmp_path / "out"
    original = run_cli.Batcher.run

    def meanwhile_another_process_writes(self, batch):
        (out / "01.png").write_bytes(b"another process's result")
        return original(self, batch)

    monkeypatch.setattr(run_cli.Batcher, "run", meanwhile_another_process_writes)
    code, stderr = recon_run(hardening_artifacts["conv"], *inputs, "--out", out, "--batch", "1")
    assert code == 1 and "01.png: already exists (created after the run started); not replaced" in stderr
    assert (out / "01.png").read_bytes() == b"another process's result"
    assert sorted(p.name for p in out.iterdir()) == ["00.png", "01.png"]  # no temporary file


STOPPED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from recon.runtime.cli.run import run_command
    from recon.runtime.io import imageio

    png = imageio.FORMATS["png"]
    original, calls = png.write, []

    def write_then_stop(path, image, like):
        calls.append(path)
        original(path, image, like)  # the temporary file exists now; the signal lands before its publish
        if len(calls) == 2:
            os.kill(os.getpid(), getattr(signal, sys.argv[1]))

    png.write = write_then_stop
    run_command.main(sys.argv[2:], prog_name="recon-run")
    """
)


@pytest.mark.parametrize("mode", ["--serial", "--pipelined"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_signal_mid_write_leaves_no_temporary_file_and_prints_the_summary(
    hardening_artifacts, tmp_path, name, mode
):
    inputs = _pngs(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = [str(hardening_artifacts["conv"]), *map(str, inputs), "--out", str(out), "--batch", "1", "--json"]
    args += ["--serial"] if mode == "--serial" else []
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_MID_WRITE, name, *args], capture_output=True, text=True, timeout=120
    )
    signum = getattr(signal, name)
    assert done.returncode == 128 + signum, (done.returncode, done.stderr)
    assert f"interrupted by {name}" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["error"] == f"interrupted by {name}" and not summary["ok"]
    statuses = [f["status"] for f in summary["outcomes"]]
    if mode == "--serial":  # the signal lands between the second file's temporary file and its publish
        assert statuses == ["written", "pending", "pending", "pending"], statuses
        assert sorted(p.name for p in out.iterdir()) == ["00.png"]  # and no hidden *.tmp
    else:  # the writer thread finishes the file in hand (the signal reaches the main thread), drops the rest
        written = statuses.count("written")
        assert written >= 2 and statuses == ["written"] * written + ["pending"] * (4 - written), statuses
        assert sorted(p.name for p in out.iterdir()) == [f"{i:02d}.png" for i in range(written)]  # no *.tmp
