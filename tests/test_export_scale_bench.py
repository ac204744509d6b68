"""bench/export_scale.py measures each export's own peak memory: the kernel's count for that one child."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("export_scale", ROOT / "bench" / "export_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_memory_is_the_child_s_own_and_failures_are_reported():
    bench = _bench()
    # a child that touches 300 MB: its peak, not this process's, and not a later child's
    big = bench.measure([sys.executable, "-c", "b = bytearray(300_000_000); print('{}')"])
    small = bench.measure([sys.executable, "-c", "print('{}')"])
    assert big["exit"] == 0 and 0.3 <= big["peak_rss_gb"] < 1.0, big
    assert small["peak_rss_gb"] < 0.1, small
    failed = bench.measure([sys.executable, "-c", "import sys; sys.exit('error: no')"])
    assert failed["exit"] == 1 and failed["error"] == ["error: no"]
