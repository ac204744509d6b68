"""recon-run end to end against the network alone, per image, side by side in one run (docs/benchmarks.md,
"The main job").

For each format (16-bit PNG, TIFF, NPY, a DICOM series) at SIZE², `recon-run` (a subprocess, as a site runs
it) on FEW and MANY files; the marginal time per image, (t_many − t_few) / (MANY − FEW), leaves out the start
(imports, compile) that a long job pays once. Beside it, the network's own time per image at the same batch
and backend: `Reconstructor.run` on an in-memory batch with the consistency check on, as recon-run runs it.
Both pipelined (the default) and `--serial`, rounds alternated so that both meet the same machine.

    python bench/recon_run.py ARTIFACT [--size 512] [--batch 8] [--few 8] [--many 40] [--rounds 2]
                              [--formats png,tiff,npy,dicom] [--threads 2] [--json FILE]
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

import numpy as np

from recon.runtime import Reconstructor
from recon.runtime.profiling import cpu_description

BIN = Path(sys.executable).parent


def write_inputs(folder: Path, fmt: str, count: int, size: int) -> Path:
    """`count` 16-bit images of size² in `fmt` (a DICOM series: int16 HU slices named by UID)."""
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = (rng.random((size, size)) * 40000 + 2000).astype(np.uint16)
    if fmt == "dicom":
        subprocess.run(
            [
                sys.executable,
                "scripts/ct_dicom_series.py",
                str(folder),
                "--slices",
                str(count),
                "--size",
                str(size),
            ],
            check=True,
            capture_output=True,
        )
        return folder
    for i in range(count):
        image = np.roll(base, i, axis=1)
        if fmt == "png":
            Image.fromarray(image).save(folder / f"{i:04d}.png")
        elif fmt == "tiff":
            tifffile.imwrite(folder / f"{i:04d}.tif", image)
        else:
            np.save(folder / f"{i:04d}.npy", image)
    return folder


def recon_run_seconds(
    artifact: Path, inputs: Path, out: Path, args: argparse.Namespace, serial: bool
) -> float:
    command = [
        str(BIN / "recon-run"),
        str(artifact),
        str(inputs),
        "--out",
        str(out),
        "--batch",
        str(args.batch),
    ]
    command += ["--threads", str(args.threads), "--backend", args.backend, "--json"]
    command += ["--serial"] if serial else []
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    report = json.loads(result.stdout)
    if not report["ok"]:
        raise SystemExit(f"recon-run failed: {result.stderr.strip()[:500]}")
    return seconds


def network_ms_per_image(artifact: Path, args: argparse.Namespace, iters: int = 6) -> float:
    with Reconstructor.from_artifact(artifact, backend=args.backend, threads=args.threads) as rec:
        x = np.random.default_rng(0).random((args.batch, 1, args.size, args.size), dtype=np.float32)
        rec.run(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            rec.run(x)
            times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3 / args.batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--few", type=int, default=8)
    parser.add_argument("--many", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--formats", default="png,tiff,npy,dicom")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}  (cores: {os.cpu_count()})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon-bench-run-") as tmp:
        root = Path(tmp)
        for fmt in args.formats.split(","):
            few = write_inputs(root / fmt / "few", fmt, args.few, args.size)
            many = write_inputs(root / fmt / "many", fmt, args.many, args.size)
            seconds: dict[str, list[float]] = {"pipelined": [], "serial": []}
            network = []
            for r in range(args.rounds):
                order = ("pipelined", "serial") if r % 2 == 0 else ("serial", "pipelined")
                network.append(network_ms_per_image(args.artifact, args))
                for mode in order:
                    times = []
                    for name, folder in (("few", few), ("many", many)):
                        out = root / fmt / f"out-{mode}-{name}-{r}"
                        times.append(recon_run_seconds(args.artifact, folder, out, args, mode == "serial"))
                    seconds[mode].append((times[1] - times[0]) / (args.many - args.few) * 1e3)
            net = float(np.median(network))
            row = {"format": fmt, "network_ms_per_image": net}
            for mode, values in seconds.items():
                row[f"{mode}_ms_per_image"] = float(np.median(values))
                row[f"{mode}_ratio"] = float(np.median(values)) / net
            rows.append(row)
            print(
                f"{fmt:6s} network {net:8.1f} ms/image"
                f" | recon-run pipelined {row['pipelined_ms_per_image']:8.1f}"
                f" ({row['pipelined_ratio']:.3f}×) | serial {row['serial_ms_per_image']:8.1f}"
                f" ({row['serial_ratio']:.3f}×)",
                flush=True,
            )
    if args.json:
        settings = {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        }
        args.json.write_text(json.dumps({"cpu": cpu_description(), "args": settings, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
