"""Rule 4 (issue 23): untrusted text never forges output, and every legal file name works.

File names reach the terminal and JSON through one function (runtime/io/untrusted.shown) that escapes control
characters; names are bytes on Linux, and one that is not UTF-8 is read, written and reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from fuzzing import recon_run
from PIL import Image
from runtime_artifacts import H, W

from recon.runtime.io.untrusted import shown


def test_shown_escapes_every_control_character_and_undecodable_byte():
    assert shown("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert shown("\x1b[2J\x7f\x85\u202e\u2028") == "\\x1b[2J\\x7f\\x85\\u202e\\u2028"
    assert shown(os.fsdecode(b"scan-\xff.png")) == shown(b"scan-\xff.png") == "scan-\\xff.png"
    assert shown("Müller/Ünal 頭部.png") == "Müller/Ünal 頭部.png"  # printable text stays as it is


def test_a_file_name_holding_a_newline_cannot_forge_an_error_line(hardening_artifacts, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(folder / "good.png")
    (folder / "x.png\nerror: good.png: forged\x1b[2J.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    code, stderr = recon_run(hardening_artifacts["conv"], folder, "--out", tmp_path / "out")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, stderr
    assert "x.png\\nerror: good.png: forged\\x1b[2J.png" in errors[0] and "\x1b" not in stderr
    assert (tmp_path / "out" / "good.png").exists()


def test_a_file_name_that_is_not_utf8_is_read_written_and_reported(hardening_artifacts, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = b"scan-\xff\xfe.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(os.path.join(os.fsencode(folder), name))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "recon-run"), str(hardening_artifacts["conv"]), str(folder),
         "--out", str(tmp_path / "out"), "--json"],
        capture_output=True, timeout=120, env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert os.listdir(os.fsencode(tmp_path / "out")) == [name]
    summary = json.loads(done.stdout.decode("utf-8"))  # strict UTF-8: no lone surrogate reached stdout
    assert Path(summary["outcomes"][0]["path"]).name == "scan-\\xff\\xfe.png"
