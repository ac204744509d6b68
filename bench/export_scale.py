"""Wall time and peak memory of `recon-export` at the sizes a newcomer meets (issue 27; docs/benchmarks.md).

Each export runs as its own process (the console script, as a user runs it); its wall time is measured
around it and its peak resident memory is the kernel's own count for that child (`os.wait4`'s rusage
ru_maxrss, what `/usr/bin/time -v` prints as "Maximum resident set size"). Stage times come from the
export's `--json` summary (`timings_s`). Cases:

- `resunet`: the default ResUNet export, `recon-export --model resunet` (shipped weights, 500-image
  consistency calibration);
- `ct512`: `recon-export --model cnn --task ct --image-size 512 --views 180 --allow-geometry-change`.

    python bench/export_scale.py                          # both, as a user runs them
    python bench/export_scale.py --cases ct512 --consistency-images 64 --markdown scale.md --json scale.json
    python bench/export_scale.py --image-size 256 --views 60   # a reduced CT case on a busy machine

`--consistency-images` / `--image-size` / `--views` shrink the runs (say so next to the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def case_commands(args: argparse.Namespace, out: Path) -> dict[str, list[str]]:
    ct = ["--model", "cnn", "--task", "ct", "--image-size", str(args.image_size), "--views", str(args.views)]
    commands = {
        "resunet": ["--model", "resunet"],
        "ct512": [*ct, "--allow-geometry-change"],
    }
    extra = ["--json", "--quiet"]
    if args.consistency_images is not None:
        extra += ["--consistency-images", str(args.consistency_images)]
    return {
        name: [str(BIN / "recon-export"), *argv, "--out", str(out / name), *extra]
        for name, argv in commands.items()
        if name in args.cases
    }


def measure(command: list[str]) -> dict[str, Any]:
    """Run one export; its wall time, its own peak RSS and its summary.

    Through `launch` (this file, a small Python): Linux carries the parent's RSS high-water mark into a
    forked child across exec (exec records the old mm's peak), so a child forked straight from a big
    parent (pytest, a notebook) would report at least the parent's peak; forked from the launcher it
    starts at the launcher's ~10 MB.
    """
    started = time.perf_counter()
    with (
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
        tempfile.NamedTemporaryFile(suffix=".json") as report,
    ):
        launcher = [sys.executable, str(Path(__file__).resolve()), "--launch", report.name, *command]
        code = subprocess.run(launcher, stdout=stdout, stderr=stderr).returncode
        wall = time.perf_counter() - started
        usage = json.loads(Path(report.name).read_text() or "{}")
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(), stderr.read().decode()
    result: dict[str, Any] = {
        "command": " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command)),
        "exit": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.get("cpu_s", float("nan")), 1),
        "peak_rss_gb": round(usage.get("maxrss_kib", 0) * 1024 / 1e9, 2),
    }
    if code == 0:
        try:
            summary = json.loads(out)
        except ValueError:
            summary = {}
        result["timings_s"] = summary.get("timings_s")
        result["consistency_n"] = (summary.get("consistency") or {}).get("calibration", {}).get("n")
    else:
        result["error"] = err.strip().splitlines()[-1:] if err.strip() else []
    return result


def launch(report: str, command: list[str]) -> int:
    """Run `command` as this small process's child; write its own rusage (wait4) to `report`."""
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    Path(report).write_text(
        json.dumps({"maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime})
    )
    return os.waitstatus_to_exitcode(status)


def markdown(results: dict[str, dict[str, Any]], cpu: str, load: tuple[float, float, float]) -> str:
    lines = [
        f"CPU: {cpu}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        "",
        "| case | wall | CPU time | peak RSS | calibration images | stages (s) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        stages = ", ".join(f"{k} {v:.0f}" for k, v in (r.get("timings_s") or {}).items())
        lines.append(
            f"| {name}: `{r['command'].split(' --out ')[0]}` | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s | "
            f"{r['peak_rss_gb']:.2f} GB | {r.get('consistency_n', '-')} | {stages or r.get('error')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from recon.runtime.profiling import cpu_description  # here: the launcher must stay small

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", choices=["resunet", "ct512"], default=["resunet", "ct512"])
    parser.add_argument("--image-size", type=int, default=512, help="CT case image side")
    parser.add_argument("--views", type=int, default=180, help="CT case views")
    parser.add_argument("--consistency-images", type=int, help="[the export's default, 500]")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    cpu, load = cpu_description(), os.getloadavg()
    print(f"CPU: {cpu}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="recon-export-scale-") as tmp:
        for name, command in case_commands(args, Path(tmp)).items():
            results[name] = measure(command)
            print(json.dumps({name: results[name]}), flush=True)
    table = markdown(results, cpu, load)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "load": load, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--launch"]:
        sys.exit(launch(sys.argv[2], sys.argv[3:]))
    main()
