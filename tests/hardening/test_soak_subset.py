"""A soak subset on every installed CPU backend: scripts/soak.py for a few thousand calls, two threads.

The full soak (10,000+ calls, `make soak`) stays a script; this runs the same code briefly so that a backend
that leaks file descriptors or threads, grows without bound, or returns different bits for the same input
fails in the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def test_a_short_soak_holds_memory_descriptors_threads_and_outputs(
    hardening_artifacts, cpu_backend, tmp_path
):
    report_path = tmp_path / "soak.json"
    artifact = hardening_artifacts["conv"]
    command = [sys.executable, str(SOAK), "--artifact", str(artifact), "--backend", cpu_backend,
               "--calls", "2000", "--warmup", "1000", "--workers", "2", "--threads", "1",
               "--max-growth", "2", "--json", str(report_path)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["backend"] == cpu_backend
    assert report["output_mismatches"] == 0
    assert report["open_fds"]["start"] == report["open_fds"]["end"]
    assert report["os_threads"]["start"] == report["os_threads"]["end"]
