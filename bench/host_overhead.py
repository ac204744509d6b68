"""The C++ host library against raw OpenVINO C++ and against the Python runtime (issue 25).

1. Per call: `recon::Reconstructor::run` (input checks, plan, output copy, NaN check, clip; consistency off)
   against raw OpenVINO on the same ONNX file compiled alike (f32, LATENCY, one stream, same threads, the same
   static shape), interleaved in one process (build/host/host_overhead); and with the consistency check on.
2. Cold start, side by side: a fresh process that opens the artifact and reconstructs one image — the C++
   command-line host (`recon-host`) against `python -c` with recon.runtime on its openvino backend — wall
   time of the whole process, median of a few runs.

    .venv/bin/python bench/host_overhead.py [--artifact DIR] [--side 256] [--batch 1,8] [--iters 30]

Without --artifact it exports the shipped CNN deblur weights at the given side into /tmp (recon-export).
Prints a markdown table and the CPU it ran on (docs/benchmarks.md keeps the numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "host"


def export(side: int) -> Path:
    out = Path(tempfile.gettempdir()) / f"recon-host-bench-cnn-deblur-{side}"
    if not (out / "manifest.json").exists():
        command = [sys.executable, "-m", "recon.export.cli", "--model", "cnn", "--task", "deblur", "--size",
                   str(side), "--batch", "1:8:8", "--engine", "none", "--consistency-images", "32", "--quiet",
                   "--force", "--out", str(out)]  # fmt: skip
        subprocess.run(command, check=True, timeout=1800)
    return out


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()
    subprocess.run(["make", "host", f"PY={sys.executable}"], cwd=ROOT, check=True, capture_output=True)
    artifact = args.artifact or export(args.side)
    from recon.runtime.profiling import cpu_description

    rows = []
    for batch in map(int, args.batch.split(",")):
        out = subprocess.run(
            [str(BUILD / "host_overhead"), str(artifact), str(batch), str(args.iters), str(args.threads),
             str(args.side)],  # fmt: skip
            check=True, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        rows.append(json.loads(out.stdout))

    image = np.random.default_rng(0).uniform(0, 1, (1, args.side, args.side)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "in.npy", image)
        host = [str(BUILD / "recon-host"), str(artifact), f"{tmp}/in.npy", "--out", f"{tmp}/out.npy",
                "--threads", str(args.threads)]  # fmt: skip
        python = [sys.executable, "-c", (
            "import numpy as np; from recon.runtime import Reconstructor; "
            f"r = Reconstructor.from_artifact({str(artifact)!r}, backend='openvino', "
            f"threads={args.threads}); "
            f"np.save({tmp!r} + '/py.npy', r.run(np.load({tmp!r} + '/in.npy'))); r.close()")]  # fmt: skip
        cold_host, cold_python = [], []
        for _ in range(args.cold_runs):  # alternated, so load on the machine hits both alike
            cold_host.append(wall(host))
            cold_python.append(wall(python))
        same = float(np.abs(np.load(f"{tmp}/out.npy") - np.load(f"{tmp}/py.npy")).max())

    print(f"CPU: {cpu_description()}")
    print(
        f"artifact: {artifact} ({rows[0]['side']}², threads {args.threads}, {args.iters} interleaved calls)\n"
    )
    print("| batch | raw OpenVINO C++ (ms) | recon host (ms) | host ÷ raw | host + consistency (ms) |")
    print("|---|---|---|---|---|")
    for r in rows:
        raw, host_s, scored = r["raw_median_s"], r["host_median_s"], r["host_with_scores_median_s"]
        ratio = host_s / raw
        print(f"| {r['batch']} | {raw * 1e3:.2f} | {host_s * 1e3:.2f} | {ratio:.3f} | {scored * 1e3:.2f} |")
    print("\n| cold start: new process, open + 1 image (s, median) | C++ recon-host | Python recon.runtime |")
    print("|---|---|---|")
    print(f"| {args.cold_runs} runs each, alternated | {statistics.median(cold_host):.2f} | "
          f"{statistics.median(cold_python):.2f} |")  # fmt: skip
    print(f"\n(the two outputs differ by at most {same:.1e})")


if __name__ == "__main__":
    main()
