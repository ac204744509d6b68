"""The mutation check of issue 28 (`scripts/mutation_gpu.py`): the GPU path's known bugs, planted one at a
time in a copy, each make a CPU-side test fail, and the clean copy passes. Slow: a pytest run per bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_planted_gpu_bug_is_caught_by_a_cpu_test():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mutation_gpu.py")], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": caught") == 5 and "NOT CAUGHT" not in proc.stdout
