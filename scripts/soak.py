#!/usr/bin/env python3
"""Soak test: one Reconstructor, many calls, as a scanner service runs it for months.

Measures, after a warm-up that has seen every batch shape of the workload:
- resident memory (RSS from /proc/self/statm) at the end vs. after warm-up, and its slope per 1000 calls;
- open file descriptors and OS threads, start vs. end;
- latency p50/p99 of the first and the last 1000 calls (the drift);
- correctness: every output must be bit-identical to the first output for the same input.

The workload cycles through 40 fixed inputs (batch 1..12 incl. batches above the profile's max, which are
split; float32 / uint16 / float64 / (H, W) / Fortran-ordered), so every 1000-call window has the same mix.
Without --artifact, a small CNN (64x64, random weights) is exported first with recon-export in a
subprocess, so that this process holds only the runtime (numpy + onnxruntime), never torch.

Exit status 1 when RSS grows by --max-growth % or more, a file descriptor leaks, or an output changes.

Examples:
  python scripts/soak.py                                  # 10,000 calls on a freshly exported CNN
  python scripts/soak.py --artifact artifacts/resunet-deblur --calls 20000 --json soak.json
  python scripts/soak.py --workers 4 --threads 1          # 4 request threads sharing the Reconstructor
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

POOL = 40  # distinct inputs; 1000 is a multiple, so every 1000-call window has the same mix
BATCHES = (1, 4, 8, 2, 12, 1, 3, 8)


def rss_bytes() -> int:
    """Current resident set size (not the peak that resource.getrusage reports)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best the standard library offers
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def os_threads() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("Threads:"))
    except (OSError, StopIteration):
        return None


def make_pool(hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pool = []
    for k in range(POOL):
        images = rng.random((BATCHES[k % len(BATCHES)], 1, *hw))
        form = k % 5
        if form == 0:
            pool.append(images.astype(np.float32))
        elif form == 1:
            pool.append((images[:, 0] * 65535).astype(np.uint16))
        elif form == 2:
            pool.append(images)  # float64
        elif form == 3:
            pool.append(images[0, 0].astype(np.float32))  # (H, W)
        else:
            pool.append(np.asfortranarray(images.astype(np.float32)))
    return pool


def export_default(directory: Path, size: int) -> Path:
    target = directory / "cnn-deblur"
    command = [sys.executable, "-m", "recon.export.cli", "--model", "cnn", "--task", "deblur",
               "--random-init", "--size", str(size), "--batch", "1:4:8", "--engine", "none", "--quiet",
               "--out", str(target)]  # fmt: skip
    print(f"soak: exporting a test artifact: {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"soak: recon-export failed (pass --artifact DIR instead): {result.stderr.strip()}")
    return target


def percentiles(ms: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)} | {"mean": float(ms.mean())}


def soak(args: argparse.Namespace, artifact: Path) -> dict[str, Any]:
    from recon.runtime import Reconstructor

    reconstructor = Reconstructor.from_artifact(artifact, backend=args.backend, threads=args.threads)
    hw = tuple(d or args.size for d in reconstructor.input_hw)
    pool = make_pool(hw)  # type: ignore[arg-type]
    expected: list[str | None] = [None] * POOL
    latencies = np.full(args.calls, np.nan)  # touched now: its pages are not growth later
    rss: list[tuple[int, int]] = []  # (measured call index, bytes)
    mismatches: list[int] = []
    lock = threading.Lock()

    def digest(output: np.ndarray) -> str:  # hashes the buffer in place, no copy
        return hashlib.sha256(memoryview(np.ascontiguousarray(output))).hexdigest()

    def one_call(call: int, measured: bool) -> None:
        # warm-up and measurement run this same code, so that one-off growth (onnxruntime's arena,
        # malloc adapting its mmap threshold to these buffer sizes) happens before the baseline
        item = call % POOL
        begin = time.perf_counter()
        output = reconstructor.run(pool[item])
        seconds = time.perf_counter() - begin
        key = digest(output)
        with lock:
            if expected[item] is None:
                expected[item] = key
            elif key != expected[item]:
                mismatches.append(call)
        if measured:
            latencies[call] = seconds
            if call % 100 == 99:
                with lock:
                    rss.append((call + 1, rss_bytes()))

    for call in range(args.warmup):  # every input several times
        one_call(call, measured=False)
    gc.collect()
    baseline, fds_start, threads_start = rss_bytes(), open_fds(), os_threads()
    rss.append((0, baseline))
    started = time.perf_counter()

    def work(worker: int) -> None:
        for call in range(worker, args.calls, args.workers):
            one_call(call, measured=True)

    workers = [threading.Thread(target=work, args=(w,)) for w in range(args.workers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    gc.collect()
    final, fds_end, threads_end = rss_bytes(), open_fds(), os_threads()
    rss.append((args.calls, final))
    reconstructor.close()

    calls, sizes = np.array(rss, dtype=np.float64).T
    slope = float(np.polyfit(calls, sizes, 1)[0]) * 1000 if len(calls) > 2 else 0.0
    ms = latencies * 1e3
    window = min(1000, args.calls)
    first, last = percentiles(ms[:window]), percentiles(ms[-window:])
    import onnxruntime

    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "artifact": str(artifact)
        if args.artifact
        else f"exported cnn-deblur {args.size}x{args.size} (random)",
        "backend": reconstructor.backend_name,
        "precision": reconstructor.precision,
        "intra_op_threads": args.threads,
        "workers": args.workers,
        "calls": args.calls,
        "warmup_calls": args.warmup,
        "images": int(sum(len(pool[c % POOL]) if pool[c % POOL].ndim > 2 else 1 for c in range(args.calls))),
        "wall_s": wall,
        "rss_mib": {
            "after_warmup": baseline / 2**20,
            "end": final / 2**20,
            "max": float(sizes.max()) / 2**20,
        },
        "rss_growth_percent": (final - baseline) / baseline * 100,
        "rss_slope_kib_per_1000_calls": slope / 1024,
        "rss_mib_every_1000_calls": [round(b / 2**20, 2) for c, b in rss if c % 1000 == 0],
        "open_fds": {"start": fds_start, "end": fds_end},
        "os_threads": {"start": threads_start, "end": threads_end},
        "latency_ms": {"first_1000": first, "last_1000": last, "all": percentiles(ms)},
        "p99_drift_percent": (last["p99"] - first["p99"]) / first["p99"] * 100,
        "output_mismatches": len(mismatches),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.index("Examples:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--artifact", type=Path, help="artifact directory (default: export a small CNN)")
    parser.add_argument("--calls", type=int, default=10_000, help="measured calls (default 10000)")
    parser.add_argument("--warmup", type=int, default=2000, help="untimed calls first (default 2000)")
    parser.add_argument("--backend", default="auto", help="Reconstructor backend (default auto)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--workers", type=int, default=1, help="request threads sharing the Reconstructor")
    parser.add_argument("--size", type=int, default=64, help="image size of the exported CNN (default 64)")
    parser.add_argument("--max-growth", type=float, default=1.0, help="RSS growth limit, %% (default 1)")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if args.calls < 1 or args.workers < 1 or args.warmup < POOL:
        parser.error(f"--calls and --workers must be >= 1, --warmup >= {POOL} (every input once)")

    with tempfile.TemporaryDirectory(prefix="recon-soak-") as scratch:
        artifact = args.artifact or export_default(Path(scratch), args.size)
        report = soak(args, artifact)
    assert "torch" not in sys.modules, "the soak must measure the runtime alone"

    rss, first, last = (
        report["rss_mib"],
        report["latency_ms"]["first_1000"],
        report["latency_ms"]["last_1000"],
    )
    print(
        f"soak: {report['calls']} calls ({report['images']} images) on {report['backend']} "
        f"({report['precision']}), {report['workers']} worker(s), {report['wall_s']:.1f} s\n"
        f"  RSS after warm-up {rss['after_warmup']:.1f} MiB, end {rss['end']:.1f} MiB, "
        f"max {rss['max']:.1f} MiB: "
        f"growth {report['rss_growth_percent']:+.3f}% (slope {report['rss_slope_kib_per_1000_calls']:+.1f} "
        f"KiB per 1000 calls)\n"
        f"  open fds {report['open_fds']['start']} -> {report['open_fds']['end']}, OS threads "
        f"{report['os_threads']['start']} -> {report['os_threads']['end']}\n"
        f"  latency first 1000: p50 {first['p50']:.2f} ms, p99 {first['p99']:.2f} ms; last 1000: "
        f"p50 {last['p50']:.2f} ms, p99 {last['p99']:.2f} ms; p99 drift {report['p99_drift_percent']:+.1f}%\n"
        f"  outputs differing from the first run of the same input: {report['output_mismatches']}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = []
    if report["rss_growth_percent"] >= args.max_growth:
        failed.append(f"RSS grew {report['rss_growth_percent']:.2f}% (limit {args.max_growth}%)")
    if None not in report["open_fds"].values() and report["open_fds"]["end"] > report["open_fds"]["start"]:
        failed.append("file descriptors leaked")
    if report["output_mismatches"]:
        failed.append(f"{report['output_mismatches']} outputs changed")
    if failed:
        print("soak: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
