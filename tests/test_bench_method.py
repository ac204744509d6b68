"""bench/runtime.py's head-to-head method: it recovers a known ratio and reports what it can resolve."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_runtime", ROOT / "bench" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_head_to_head_recovers_a_known_ratio_and_the_peer_against_itself_is_one():
    bench = load_bench()
    sides = {
        "ours": [lambda: busy(0.003), lambda: busy(0.003)],
        "peer": [lambda: busy(0.002), lambda: busy(0.002)],
        "peer again": [lambda: busy(0.002)],
    }
    result = bench.head_to_head(sides, rounds=12, iters=3, pause=0.0)
    ours, again = result["ours"], result["peer again"]
    assert 1.4 < ours["ratio_to_peer"] < 1.6, ours
    assert ours["ratio_ci95"][0] <= ours["ratio_to_peer"] <= ours["ratio_ci95"][1]
    assert 0.95 < again["ratio_to_peer"] < 1.05, again
    assert result["peer"]["ratio_to_peer"] == 1.0 and ours["instances"] == 2
    assert len(ours["block_s"]) == 12


def test_a_target_is_judged_on_the_head_to_head_where_one_was_measured():
    bench = load_bench()
    rows = [
        {"batch": 1, "variant": "recon.runtime openvino bf16", "class": "bf16", "ms_per_image": 12.0},
        {"batch": 1, "variant": "OpenVINO direct bf16", "class": "bf16", "ms_per_image": 10.0},
    ]
    (table_only,) = [t for t in bench.targets(rows) if "recon_best" in t]
    assert table_only["measured"] == "table" and not table_only["met"]
    h2h = [{"batch": 1, "class": "bf16", "peer": "OpenVINO direct bf16", "ratio": 1.02}]
    (paired,) = [t for t in bench.targets(rows, h2h) if "recon_best" in t]
    assert paired["measured"].startswith("head to head") and paired["ratio"] == 1.02 and paired["met"]
    assert paired["table_ratio"] == 1.2
    # against every peer measured head to head, the class is judged on the worst
    h2h.append({"batch": 1, "class": "bf16", "peer": "torch.compile bf16 (autocast)", "ratio": 1.05})
    (worst,) = [t for t in bench.targets(rows, h2h) if "recon_best" in t]
    assert worst["ratio"] == 1.05 and not worst["met"] and "torch.compile" in worst["measured"]
