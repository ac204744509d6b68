"""The runtime's CPU performance, measured side by side in one run (issue 5's targets).

For the shipped ResUNet (small preset, 256×256) it times, with the same weights and the same threads:
  - torch eager FP32 (inference_mode, after warm-up), and torch with bf16 autocast where the CPU has bf16,
  - recon.runtime FP32 and INT8 (onnxruntime CPU), and a bare `InferenceSession.run` on the same graph,
  - the CT artifact (60 and 180 views; FBP in the graph) against scikit-image `iradon` + the torch network,
  - the cold start of `recon-run` on one image against an equivalent torch script,
and prints ratios. Variants are interleaved round by round, so load on this noisy machine hits all alike.

    python bench/runtime.py [--threads 2] [--rounds 5] [--iters 4] [--markdown FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, iters: int, warmup: int = 2) -> dict:
    """Median and p90 seconds per call of each variant, timed round-robin in blocks of `iters`.

    Each block starts after a 0.2 s pause and one untimed call: the previous variant's thread pool (torch's
    OpenMP, another onnxruntime session's) keeps spinning after its last call, and on 2 cores that spin was
    billed to the next variant (onnxruntime right after torch: 60 ms instead of 46 ms at batch 1).
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            time.sleep(0.2)
            fn()
            for _ in range(iters):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(t), "p90_s": float(np.percentile(t, 90)), "n": len(t)}
        for name, t in times.items()
    }


def matmul_peak_gflops(threads: int) -> float:
    """FP32 GEMM rate of this CPU (torch, 2048², same threads): the floor the networks are compared to."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(10))
    return 2 * 2048**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def export(model: str, task: str, out: Path, *extra: str) -> Path:
    cmd = [
        str(BIN / "recon-export"),
        "--model",
        model,
        "--task",
        task,
        "--out",
        str(out),
        "--engine",
        "none",
        "--force",
        "-q",
        *extra,
    ]
    subprocess.run(cmd, check=True)
    return out


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return 10 * np.log10(1.0 / mse)


def int8_quality(fp32: Any, int8: Any, task: str) -> dict:
    """Mean PSNR to the ground truth on the 32-image held-out set, FP32 artifact vs INT8 artifact."""
    from recon.training.data import heldout_set
    from recon.training.tasks import task_config

    heldout = heldout_set(task_config(task), n=32)
    y, t = heldout.measurements.numpy(), heldout.targets.numpy()[:, 0]
    p32, p8 = (
        float(np.mean([psnr(a, b) for a, b in zip(rec.run(y), t, strict=True)])) for rec in (fp32, int8)
    )
    return {"images": len(t), "psnr_fp32": p32, "psnr_int8": p8, "loss_db": p32 - p8}


def bench_deblur(work: Path, threads: int, rounds: int, iters: int) -> dict:
    import torch

    from recon.runtime import Reconstructor
    from recon.runtime.backends.onnxruntime import new_session, session_options
    from recon.training.models import count_flops
    from recon.training.weights import load_trained

    artifact = export("resunet", "deblur", work / "resunet-deblur", "--int8", "--threads", str(threads))
    network, _card = load_trained("resunet", "deblur")
    torch.set_num_threads(threads)
    gflop = count_flops(network, (256, 256)) / 1e9
    peak = matmul_peak_gflops(threads)

    fp32 = Reconstructor.from_artifact(artifact, backend="cpu", threads=threads)
    int8 = Reconstructor.from_artifact(artifact, backend="cpu", precision="int8", threads=threads)
    bare = new_session(artifact / "model.onnx", session_options(threads))
    bf16_ok = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False

    rows = []
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        x = rng.random((batch, 1, 256, 256), dtype=np.float32)
        xt = torch.from_numpy(x)

        def torch_fp32(xt=xt):
            with torch.inference_mode():
                return network(xt)

        def torch_bf16(xt=xt):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return network(xt)

        variants = {
            "torch eager fp32": torch_fp32,
            "bare onnxruntime fp32": lambda x=x: bare.run(None, {"measurement": x}),
            "recon.runtime fp32": lambda x=x: fp32.run(x),
            "recon.runtime int8": lambda x=x: int8.run(x),
        }
        if bf16_ok:
            variants["torch autocast bf16"] = torch_bf16
        result = interleaved(variants, rounds, iters)
        torch_s = result["torch eager fp32"]["median_s"]
        for name, r in result.items():
            rows.append(
                {
                    "batch": batch,
                    "variant": name,
                    "ms_per_image": 1e3 * r["median_s"] / batch,
                    "p90_ms_per_call": 1e3 * r["p90_s"],
                    "speedup_vs_torch": torch_s / r["median_s"],
                    "gflops": gflop * batch / r["median_s"],
                    "fraction_of_matmul_peak": gflop * batch / r["median_s"] / peak,
                }
            )
        overhead = result["recon.runtime fp32"]["median_s"] / result["bare onnxruntime fp32"]["median_s"] - 1
        rows.append({"batch": batch, "variant": "runtime overhead over bare ORT", "overhead": overhead})

    return {
        "gflop_per_image": gflop,
        "matmul_peak_gflops": peak,
        "rows": rows,
        "int8_quality": int8_quality(fp32, int8, "deblur"),
    }


def bench_ct(work: Path, threads: int, rounds: int, iters: int) -> tuple[list[dict], dict]:
    """Per-image time of the CT artifact (FP32 and INT8; the FBP stays float in both) against scikit-image,
    and the INT8 artifact's PSNR loss on the held-out set at 60 views."""
    import torch
    from skimage.transform import iradon

    from recon.runtime import Reconstructor
    from recon.training.weights import load_trained

    network, _card = load_trained("resunet", "ct")
    torch.set_num_threads(threads)
    rows = []
    for views in (60, 180):
        artifact = export(
            "resunet", "ct", work / f"resunet-ct{views}", "--angles", str(views), "--int8",
            "--threads", str(threads),
        )  # fmt: skip
        rec = Reconstructor.from_artifact(artifact, backend="cpu", threads=threads)
        rec8 = Reconstructor.from_artifact(artifact, backend="cpu", precision="int8", threads=threads)
        _, _, n_angles, n_detectors = rec.manifest.input["shape"]
        sinogram = np.random.default_rng(0).random((1, 1, n_angles, n_detectors), dtype=np.float32)
        theta = np.arange(views) * 180.0 / views
        # scikit-image wants (detectors, angles); its output is the image the network then refines.
        sk_sinogram = sinogram[0, 0].T.astype(np.float64)

        def skimage_fbp(sk_sinogram=sk_sinogram, theta=theta):
            return iradon(sk_sinogram, theta=theta, filter_name="ramp", output_size=256, circle=False)

        def skimage_fbp_and_torch(skimage_fbp=skimage_fbp):
            image = torch.from_numpy(skimage_fbp().astype(np.float32))[None, None]
            with torch.inference_mode():
                return network(image)

        result = interleaved(
            {
                "recon.runtime ct artifact (FBP + net)": lambda rec=rec, sinogram=sinogram: rec.run(sinogram),
                "recon.runtime ct artifact INT8 (float FBP + INT8 net)": lambda r=rec8, y=sinogram: r.run(y),
                "skimage iradon + torch net": skimage_fbp_and_torch,
                "skimage iradon alone": skimage_fbp,
            },
            rounds,
            iters,
        )
        base = result["recon.runtime ct artifact (FBP + net)"]["median_s"]
        for name, r in result.items():
            rows.append(
                {
                    "views": views,
                    "variant": name,
                    "ms_per_image": 1e3 * r["median_s"],
                    "ratio_to_artifact": r["median_s"] / base,
                }
            )
        if views == 60:  # the shipped task's geometry: the held-out set's sinograms fit this artifact
            quality = {"views": views, **int8_quality(rec, rec8, "ct")}
    return rows, quality


TORCH_SCRIPT = """
import sys, numpy, torch
from recon.training.weights import load_trained
network, _ = load_trained("resunet", "deblur")
x = numpy.load(sys.argv[1]).astype(numpy.float32)
with torch.inference_mode():
    y = network(torch.from_numpy(x)[None, None]).clamp(0, 1)[0, 0].numpy()
numpy.save(sys.argv[2], y)
"""


def bench_cold_start(work: Path, repeats: int = 3) -> dict:
    artifact = work / "resunet-deblur"
    image = work / "one.npy"
    np.save(image, np.random.default_rng(0).random((256, 256), dtype=np.float32))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def recon_run():
        out = Path(tempfile.mkdtemp(dir=work))
        subprocess.run(
            [str(BIN / "recon-run"), str(artifact), str(image), "--out", str(out), "--backend", "cpu"],
            check=True,
            capture_output=True,
            env=env,
        )

    def torch_script():
        subprocess.run(
            [sys.executable, "-c", TORCH_SCRIPT, str(image), str(work / "torch-out.npy")],
            check=True,
            capture_output=True,
            env=env,
        )

    result = interleaved(
        {"recon-run": recon_run, "torch script": torch_script}, rounds=repeats, iters=1, warmup=1
    )
    ratio = result["recon-run"]["median_s"] / result["torch script"]["median_s"]
    return {
        "recon_run_s": result["recon-run"]["median_s"],
        "torch_script_s": result["torch script"]["median_s"],
        "ratio": ratio,
    }


def markdown(report: dict) -> str:
    d = report["deblur"]
    lines = [
        f"Machine: {report['machine']}; threads {report['threads']}; {report['date']}.",
        f"Command: `{report['command']}`",
        "",
        f"ResUNet small, 256×256: {d['gflop_per_image']:.2f} GFLOP per image; measured FP32 matmul peak "
        f"{d['matmul_peak_gflops']:.0f} GFLOP/s.",
        "",
        "| batch | variant | ms / image | p90 ms / call | × torch eager | GFLOP/s | of matmul peak |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in d["rows"]:
        if "overhead" in r:
            continue
        lines.append(
            f"| {r['batch']} | {r['variant']} | {r['ms_per_image']:.1f} | {r['p90_ms_per_call']:.1f} | "
            f"{r['speedup_vs_torch']:.2f} | {r['gflops']:.0f} | {100 * r['fraction_of_matmul_peak']:.0f}% |"
        )
    lines += ["", "| batch | runtime overhead over bare `InferenceSession.run` |", "|---:|---:|"]
    lines += [f"| {r['batch']} | {100 * r['overhead']:+.1f}% |" for r in d["rows"] if "overhead" in r]
    q = d["int8_quality"]
    lines += [
        "",
        f"INT8 on the held-out set ({q['images']} images): PSNR {q['psnr_fp32']:.2f} dB (FP32) → "
        f"{q['psnr_int8']:.2f} dB (INT8), loss {q['loss_db']:.2f} dB.",
        "",
        "| views | variant | ms / image | × the artifact's time |",
        "|---:|---|---:|---:|",
    ]
    for r in report["ct"]:
        lines.append(
            f"| {r['views']} | {r['variant']} | {r['ms_per_image']:.1f} | {r['ratio_to_artifact']:.2f} |"
        )
    q = report["ct_int8_quality"]
    lines += [
        "",
        f"CT INT8 on the held-out set ({q['images']} images, {q['views']} views): "
        f"PSNR {q['psnr_fp32']:.2f} dB (FP32) → {q['psnr_int8']:.2f} dB (INT8), loss {q['loss_db']:.2f} dB.",
    ]
    c = report["cold_start"]
    lines += [
        "",
        f"Cold start, one 256² image, process start → file written: `recon-run` {c['recon_run_s']:.2f} s, "
        f"torch script {c['torch_script_s']:.2f} s (ratio {c['ratio']:.2f}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip", default="", help="comma list of sections to skip: deblur,ct,cold")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    import platform

    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    report = {
        "machine": f"{cpu}, {os.cpu_count()} cores",
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/runtime.py " + " ".join(sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory(prefix="recon-bench-") as tmp:
        work = Path(tmp)
        if "deblur" not in skip:
            report["deblur"] = bench_deblur(work, args.threads, args.rounds, args.iters)
        if "ct" not in skip:
            report["ct"], report["ct_int8_quality"] = bench_ct(
                work, args.threads, args.rounds, max(1, args.iters // 2)
            )
        if "cold" not in skip and "deblur" not in skip:
            report["cold_start"] = bench_cold_start(work)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if {"deblur", "ct", "cold"} & skip:
        print(json.dumps(report, indent=2))
        return
    text = markdown(report)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
