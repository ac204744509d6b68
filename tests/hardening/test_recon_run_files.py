"""recon-run takes each input file on its own: good ones are written, each bad one is reported by name.

Run as a user runs it (a subprocess), so what is checked is what a script driving recon-run sees: the exit
status, stderr's one line per failed file, and `--json` on stdout whatever happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from runtime_artifacts import H, W

BIN = Path(sys.executable).parent


def recon_run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "recon-run"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def mixed_folder(folder: Path) -> dict[str, str]:
    """Two good files and three bad ones (each bad for another reason); name -> why it is bad."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "a_good.npy", rng.random((H, W), dtype=np.float32))
    np.save(folder / "c_scale.npy", rng.random((H, W), dtype=np.float32) * 255)  # 0..255 floats
    np.save(folder / "d_shape.npy", rng.random((H + 1, W), dtype=np.float32))
    (folder / "e_damaged.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(folder / "z_good.npy", rng.random((2, H, W), dtype=np.float32))
    return {"c_scale.npy": "far outside", "d_shape.npy": "does not fit", "e_damaged.npy": "not a readable"}


def test_one_bad_file_among_good_ones_fails_alone(hardening_artifacts, tmp_path):
    bad = mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = recon_run(hardening_artifacts["conv"], tmp_path / "in", "--out", out, "--batch", "4")
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_good.npy", "z_good.npy"]
    assert np.load(out / "z_good.npy").shape == (2, H, W)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad), result.stderr
    for line, (name, why) in zip(lines, sorted(bad.items()), strict=True):
        assert line.startswith(f"error: {tmp_path / 'in' / name}: ") and why in line, line
    assert "3 file(s) failed" in result.stdout


def test_json_reports_every_file_on_stdout(hardening_artifacts, tmp_path):
    bad = mixed_folder(tmp_path / "in")
    result = recon_run(hardening_artifacts["conv"], tmp_path / "in", "--out", tmp_path / "o", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["files"] == 5 and report["failed"] == 3 and report["images"] == 3
    status = {Path(o["path"]).name: o for o in report["outcomes"]}
    assert {n for n, o in status.items() if o["status"] == "written"} == {"a_good.npy", "z_good.npy"}
    for name, why in bad.items():
        assert status[name]["status"] == "failed" and why in status[name]["reason"]


def test_json_is_printed_when_the_whole_command_fails(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((H, W), np.float32))
    result = recon_run(tmp_path, tmp_path / "a.npy", "--out", tmp_path / "o", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and "no manifest.json" in report["error"]
    assert [o["status"] for o in report["outcomes"]] == ["pending"]
    assert len(result.stderr.strip().splitlines()) == 1


def test_all_good_files_exit_zero_with_json(hardening_artifacts, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((H, W), np.float32))
    result = recon_run(hardening_artifacts["conv"], tmp_path / "a.npy", "--out", tmp_path / "o", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["outcomes"][0]["status"] == "written"


def test_a_pipelined_run_writes_exactly_what_a_serial_run_writes(hardening_artifacts, tmp_path):
    """Same files, same bytes, same JSON apart from times: reads ahead and writes behind change nothing."""
    folder = tmp_path / "in"
    mixed_folder(folder)
    rng = np.random.default_rng(1)
    for i in range(9):  # more files than a batch, some of another size (refused between good ones)
        size = (H, W) if i % 4 else (H + 8, W + 8)
        np.save(folder / f"m{i}.npy", rng.random(size, dtype=np.float32))
    runs = {}
    for mode in ("pipelined", "serial"):
        out = tmp_path / mode
        extra = ["--serial"] if mode == "serial" else []
        artifact = hardening_artifacts["conv"]
        result = recon_run(artifact, folder, "--out", out, "--batch", "3", "--json", *extra)
        report = json.loads(result.stdout)
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        for outcome in report["outcomes"]:
            outcome["out"] = Path(outcome["out"]).name
        runs[mode] = (result.returncode, result.stderr, files, report["outcomes"], report["files"])
        assert set(report["stage_s"]) == {"read", "prepare", "infer", "check", "write"}
        assert report["stage_s"]["infer"] > 0 and report["stage_s"]["write"] > 0
    assert runs["pipelined"] == runs["serial"]
    assert runs["serial"][0] == 1 and len(runs["serial"][2]) == 8  # 6 of 14 files are bad


def test_a_run_where_every_file_fails_leaves_no_out_folder_and_no_latency(hardening_artifacts, tmp_path):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "scale.npy", np.full((H, W), 200.0, np.float32))
    (tmp_path / "in" / "damaged.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "out"
    result = recon_run(hardening_artifacts["conv"], tmp_path / "in", "--out", out)
    assert result.returncode == 1
    assert not out.exists(), "an empty --out looks like a result"
    assert "latency" not in result.stdout and "p50" not in result.stdout, result.stdout
    result = recon_run(hardening_artifacts["conv"], tmp_path / "in", "--out", out, "--json")
    report = json.loads(result.stdout)
    assert report["run_ms"] is None and report["per_image_ms"] is None and not out.exists()
    out.mkdir()  # a folder the user made stays, empty or not
    recon_run(hardening_artifacts["conv"], tmp_path / "in", "--out", out)
    assert out.is_dir()
