"""The README works top to bottom: its walk-through blocks run, as written, from an empty folder.

The blocks are the fenced shell blocks that follow a `<!-- readme-walkthrough -->` line; each line is one
command, run in order in one fresh folder with the venv's console scripts. Only what makes a line cheap is
changed, and only by appending options (click takes the last value of an option) or shrinking the
geometry of the scanner-scale lines: so a command, option, file or folder the README names that does not
exist (or that an earlier line does not make) fails this test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = "<!-- readme-walkthrough -->"

# appended to a command's own options: small counts, one thread (each only shrinks the work)
CHEAP = {
    "recon-simulate": ["--heldout", "2"],
    "recon-train": [
        "--steps",
        "2",
        "--steps-per-epoch",
        "2",
        "--pool",
        "4",
        "--crop",
        "32",
        "--batch-size",
        "2",
        "--heldout",
        "2",
        "--threads",
        "1",
    ],  # fmt: skip
    "recon-eval": ["--heldout", "2", "--threads", "1"],
    "recon-export": [
        "--consistency-images",
        "16",
        "--calibration-images",
        "4",
        "--geometry-heldout",
        "2",
        "--threads",
        "1",
        "--quiet",
    ],  # fmt: skip
    "recon-bench": ["--iters", "2", "--warmup", "0", "--threads", "1"],
}
# the scanner-scale geometry, shrunk alike wherever it appears (so the lines still fit each other)
SHRINK = {"--image-size 512": "--image-size 64", "--views 180": "--views 12"}


def walkthrough_lines(readme: str) -> list[str]:
    """The commands of every fenced block after a MARKER line, in order, comments removed."""
    lines: list[str] = []
    for match in re.finditer(re.escape(MARKER) + r"\s*\n```(?:bash|sh)\n(.*?)\n```", readme, re.S):
        for line in match.group(1).splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def cheap(command: str) -> list[str]:
    for big, small in SHRINK.items():
        command = re.sub(re.escape(big) + r"\b", small, command)
    argv = shlex.split(command)
    return [str(BIN / argv[0]), *argv[1:], *CHEAP.get(argv[0], [])]


def test_the_walkthrough_is_found_and_names_only_installed_commands():
    lines = walkthrough_lines((ROOT / "README.md").read_text())
    assert len(lines) >= 15, lines
    for line in lines:
        assert (BIN / shlex.split(line)[0]).exists(), f"the README runs {line.split()[0]}, not installed"


@pytest.mark.slow
def test_the_readme_runs_top_to_bottom_from_an_empty_folder(tmp_path):
    env = {**os.environ, "RECON_DEBUG": ""}
    for line in walkthrough_lines((ROOT / "README.md").read_text()):
        result = subprocess.run(
            cheap(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
        )
        assert result.returncode == 0, f"README line failed: {line}\n{result.stderr[-3000:]}"
        assert "error:" not in result.stderr, f"{line}\n{result.stderr[-3000:]}"
