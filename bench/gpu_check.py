"""A short GPU check of recon's GPU paths, for a machine with an NVIDIA GPU and torch CUDA but no TensorRT.

    python bench/gpu_check.py --quick            # writes gpu-check.json and gpu-check.md into $OUT (or .)
    make gpu-check

Installs nothing and needs no network. It imports recon as installed, or through a folder of links
(`.shim/recon/{runtime,export,training,weights}` → the repository's folders, PYTHONPATH=.shim). Each part
runs within what is left of `--budget-s`, catches its own failure, and is written out at once; what needs
something absent here (CUDA, TensorRT, onnxruntime-gpu) is listed as skipped with the reason:

1. device: recon's CUDA query (cuda-python) against torch's view of the same GPU;
2. copies: the native TensorRT backend's copy plan (`copy_plan`, `_memcpy`) through cuda-bindings with a real
   host → device → device → host round trip, bytes compared;
3. profiles: per shipped model the ONNX footprint (measured on the CPU, or read from `--footprints`), the
   derived TensorRT profiles at the export's default ranges, and, on CUDA, torch FP16 at each profile's
   maximum: the largest tensor torch makes (< 2³¹ elements?) and the activation memory it allocates, next to
   the rule's estimate; also the old default maximum (32, 1, 2048, 2048) for the ResUNet;
4. accuracy: torch FP16 on the GPU against FP32 (TF32 off) on the held-out set, per shipped model, against
   the export's TensorRT tolerance (what the GPU tolerances rest on);
5. latency: torch CUDA per call (CUDA events), FP32 and FP16, batch 1 and 8, at the card's size;
6. backends: what recon's GPU backends say here (TensorRT and onnxruntime-gpu absent: the reason).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from json_report import finite

STARTED = time.perf_counter()
DEFAULT_SPATIAL = (64, 512, 2048)  # recon-export's default sides (export/exporter.py)
DEFAULT_BATCH = (1, 8, 32)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"[:300]


# ------------------------------------------------------------------------------------------------ parts
def part_device(ctx: dict) -> dict:
    """recon's cuda-python device query next to torch's."""
    import torch

    from recon.runtime.backends.base import BackendError
    from recon.runtime.backends.tensorrt import cuda_device, cuda_python_major

    result: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    result["cuda_python_major"] = cuda_python_major()
    try:
        result["recon"] = {
            **cuda_device(0),
            "compute_capability": ".".join(map(str, cuda_device(0)["compute_capability"])),
        }
    except BackendError as error:
        result["recon"] = {"error": str(error)}
    if torch.cuda.is_available():
        name, cc = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
        result["torch_device"] = {"name": name, "compute_capability": f"{cc[0]}.{cc[1]}"}
        result["agree"] = (
            result["recon"].get("name") == name
            and result["recon"].get("compute_capability") == f"{cc[0]}.{cc[1]}"
        )
    else:
        result["torch_device"] = None
        result["agree"] = "error" in result["recon"]  # both see no GPU
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        smi = subprocess.run(query, capture_output=True, text=True, timeout=20)
        result["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        result["nvidia_smi"] = first_line(error)
    return result


def part_copies(ctx: dict) -> dict:
    """The backend's copy plan through cuda-bindings: upload, a device-to-device copy standing in for the
    engine, download; the bytes must come back unchanged."""
    import numpy as np

    from recon.runtime.backends.tensorrt import Copy, _check, _memcpy, copy_plan, import_cudart

    if not ctx["cuda"]:
        return {"skipped": "no CUDA device"}
    cudart = import_cudart()
    _check(cudart.cudaSetDevice(0), "cudaSetDevice")
    stream = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate")
    host_in = np.random.default_rng(0).standard_normal((8, 1, 256, 256)).astype(np.float32)
    host_out = np.zeros_like(host_in)
    d_in = int(_check(cudart.cudaMalloc(host_in.nbytes), "cudaMalloc"))
    d_out = int(_check(cudart.cudaMalloc(host_out.nbytes), "cudaMalloc"))
    try:
        upload, download = copy_plan(host_in.ctypes.data, d_in, host_in.nbytes, d_out, host_out.ctypes.data,
                                     host_out.nbytes)  # fmt: skip
        _memcpy(cudart, upload, stream)
        _memcpy(cudart, Copy(d_out, d_in, host_in.nbytes, "cudaMemcpyDeviceToDevice"), stream)  # "the engine"
        _memcpy(cudart, download, stream)
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        round_trip = bool(np.array_equal(host_in, host_out))
    finally:
        cudart.cudaFree(d_in)
        cudart.cudaFree(d_out)
        cudart.cudaStreamDestroy(stream)
    # (no swapped plan is tried: a copy the wrong way can leave a sticky CUDA error for the parts after)
    return {"bytes": host_in.nbytes, "round_trip_equal": round_trip}


def _shipped(ctx: dict) -> list[tuple[str, str]]:
    from recon.training.weights import shipped_cards

    pairs = [tuple(card.stem.split("-", 1)) for card in shipped_cards()]
    return [p for p in pairs if not ctx["models"] or f"{p[0]}-{p[1]}" in ctx["models"]]


def _network(model: str, task: str) -> tuple[Any, Any, Any, bool, int]:
    """(network, deployed task config, torch pipeline, whole-image (symbolic H, W), pad multiple)."""
    from recon.export.exporter import (
        ExportOptions,
        build_pipeline,
        load_network,
        pad_multiple,
        receptive_field_of,
    )

    network, cfg, _ = load_network(ExportOptions(model=model, task=task))
    pipeline, _ = build_pipeline(network, cfg)
    whole = task == "deblur" and receptive_field_of(network) is not None
    return network, cfg, pipeline.eval(), whole, pad_multiple(network)


def weights_sha256(model: str, task: str) -> str:
    import hashlib

    from recon.training.weights import weights_dir

    return hashlib.sha256((weights_dir() / f"{model}-{task}.safetensors").read_bytes()).hexdigest()


def load_footprints(ctx: dict, path: Path) -> tuple[dict[str, dict], list[str]]:
    """Footprints from a --write-footprints file, those whose weights changed since left out (re-measured)."""
    stored = json.loads(path.read_text())
    fresh, stale = {}, []
    for model, task in _shipped(ctx):
        entry = stored.get(f"{model}-{task}")
        if entry and entry.get("weights_sha256") == weights_sha256(model, task):
            fresh[f"{model}-{task}"] = entry
        else:
            stale.append(f"{model}-{task}")
    return fresh, stale


def measure_footprints(ctx: dict, folder: Path, only: list[str] | None = None) -> dict[str, dict]:
    """The ONNX footprint of each shipped model (recon.export.tensorrt_profile), exported here on the CPU."""
    import torch

    from recon.export.onnx_export import export_onnx
    from recon.export.parity import simulated_inputs
    from recon.export.tensorrt_profile import measure_footprint

    result = {}
    for model, task in _shipped(ctx):
        if only is not None and f"{model}-{task}" not in only:
            continue
        if ctx["left"]() < 20:
            result[f"{model}-{task}"] = {"skipped": "time budget spent"}
            continue
        start = time.perf_counter()
        network, cfg, pipeline, whole, multiple = _network(model, task)
        size = 64 if whole else cfg.image_size
        example_cfg = cfg.with_overrides(image_size=size) if whole else cfg
        example = torch.from_numpy(simulated_inputs(example_cfg, [2], size, seed=1)[0][2])
        path = folder / f"{model}-{task}.onnx"
        info = export_onnx(pipeline, example, path, spatial=(32, 2048) if whole else None)
        footprint = measure_footprint(path, "measurement", info.input_shape, multiple)
        seconds = round(time.perf_counter() - start, 1)
        entry = {
            **footprint.to_json(),
            "whole_image": whole,
            "input_shape": info.input_shape,
            "seconds": seconds,
            "weights_sha256": weights_sha256(model, task),
        }
        result[f"{model}-{task}"] = entry
        log(f"  footprint {model}-{task}: {footprint.widest_elements:,} elements, {footprint.live_bytes:,} B")
    return result


class _Widest:
    """The largest floating tensor any aten op makes, and whether any exceeds 2³¹ − 1 elements."""

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        outer = self
        self.widest = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.is_floating_point():
                        outer.widest = max(outer.widest, t.numel())
                return out

        self.mode = Mode()


def _torch_at(pipeline_or_net: Any, shape: tuple[int, ...], half: bool) -> dict:
    """torch on CUDA at `shape`: the forward's peak memory beyond its input, and its widest tensor."""
    import torch

    net = pipeline_or_net
    x = torch.zeros(shape, device="cuda", dtype=torch.float16 if half else torch.float32)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    widest = _Widest()
    with torch.no_grad(), widest.mode:
        y = net(x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del x, y
    torch.cuda.empty_cache()
    return {"peak_activation_bytes": int(peak), "widest_elements": int(widest.widest)}


def part_profiles(ctx: dict) -> dict:
    """Footprints → derived profiles; on CUDA, torch FP16 at each profile's maximum (and the old default)."""
    from recon.export.tensorrt_build import EngineOptions
    from recon.export.tensorrt_profile import TENSOR_ELEMENT_LIMIT, GraphFootprint, derive_profiles

    footprints = ctx["footprints"]
    budget = EngineOptions().activation_budget_mb << 20
    rows = []
    for key, fp in footprints.items():
        row: dict[str, Any] = {"model": key}
        rows.append(row)
        if "skipped" in fp or "error" in fp:
            row.update(skipped=fp.get("skipped") or fp.get("error"))
            continue
        footprint = GraphFootprint(**{k: fp[k] for k in GraphFootprint.__dataclass_fields__})
        profiles = derive_profiles(
            footprint, DEFAULT_BATCH, DEFAULT_SPATIAL if fp["whole_image"] else None, budget
        )
        row["profiles"] = [p.to_json() for p in profiles]
        maxima = []
        for p in profiles:
            side = p.side[2] if p.side else None
            b = p.batch[2]
            rule = {"rule_widest_elements": b * footprint.elements(side),
                    "rule_activation_bytes_fp32_graph": b * footprint.activation_bytes(side)}  # fmt: skip
            maxima.append({"batch": b, "side": side, **rule})
        row["maxima"] = maxima
        row["within_limit"] = all(m["rule_widest_elements"] <= TENSOR_ELEMENT_LIMIT for m in maxima)
        if not ctx["cuda"]:
            row["torch"] = "skipped: no CUDA device"
            continue
        model, task = key.split("-", 1)
        network, cfg, pipeline, whole, _ = _network(model, task)
        net = network.cuda().half().eval()  # the network in FP16, as the FP16 engine runs it
        # the network's input: the image (whole-image deblur: the profile's side), else the card's size (CT:
        # the FBP image; the footprint's graph also holds the FBP, so its estimate is the larger)
        fixed = (1, cfg.image_size, cfg.image_size)
        for m in maxima:
            if ctx["left"]() < 15:
                m["torch"] = "skipped: time budget spent"
                continue
            try:
                shape = (m["batch"], 1, m["side"], m["side"]) if whole else (m["batch"], *fixed)
                m["torch_fp16"] = _torch_at(net, shape, half=True)
                m["torch_fp16"]["over_limit"] = m["torch_fp16"]["widest_elements"] > TENSOR_ELEMENT_LIMIT
            except Exception as error:
                m["torch_fp16"] = {"error": first_line(error)}
        if key == "resunet-deblur" and ctx["left"]() > 30:  # the old default maximum of issue 28
            try:
                old = _torch_at(net, (32, 1, 2048, 2048), half=True)
                over = old["widest_elements"] > TENSOR_ELEMENT_LIMIT
                row["old_default_max"] = {"shape": [32, 1, 2048, 2048], **old, "over_limit": over}
            except Exception as error:
                row["old_default_max"] = {"shape": [32, 1, 2048, 2048], "error": first_line(error)}
        del net
    return {"activation_budget_mb": budget >> 20, "element_limit": TENSOR_ELEMENT_LIMIT, "rows": rows}


def part_accuracy(ctx: dict) -> dict:
    """torch FP16 (network .half()) vs FP32 with TF32 off, on the held-out set, per shipped model."""
    import torch

    from recon.export.parity import DEFAULT_TOLERANCES, compare_outputs
    from recon.training import data

    if not ctx["cuda"]:
        return {"skipped": "no CUDA device (CPU FP16 arithmetic would set no GPU tolerance)"}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tolerance = DEFAULT_TOLERANCES["tensorrt"]
    rows = []
    for model, task in _shipped(ctx):
        if ctx["left"]() < 15:
            rows.append({"model": f"{model}-{task}", "skipped": "time budget spent"})
            continue
        network, cfg, _, _, _ = _network(model, task)
        evalset = data.heldout_set(cfg, ctx["n_images"], cfg.image_size)
        with torch.no_grad():
            x = evalset.inputs.cuda()
            ref = network.cuda().float()(x).float().cpu().numpy()
            half = network.half()(x.half()).float().cpu().numpy()
        metrics = compare_outputs(ref, half)
        ok, why = tolerance.check(metrics)
        rows.append({"model": f"{model}-{task}", "images": int(x.shape[0]), "max_abs": metrics["max_abs"],
                     "psnr": metrics["psnr"], "tolerance_ok": ok, "why": why})  # fmt: skip
    return {"tolerance": {"atol": tolerance.atol, "min_psnr": tolerance.min_psnr}, "rows": rows}


def part_latency(ctx: dict) -> dict:
    """torch CUDA latency per call (CUDA events around each call), FP32 (TF32 off) and FP16."""
    import numpy as np
    import torch

    if not ctx["cuda"]:
        return {"skipped": "no CUDA device"}
    torch.backends.cudnn.benchmark = True
    rows = []
    for model, task in _shipped(ctx):
        network, cfg, _, _, _ = _network(model, task)
        for precision in ("fp32", "fp16"):
            net = network.cuda().half() if precision == "fp16" else network.cuda().float()
            for batch in (1, 8):
                row = {
                    "model": f"{model}-{task}",
                    "precision": precision,
                    "batch": batch,
                    "size": cfg.image_size,
                }
                rows.append(row)
                if ctx["left"]() < 10:
                    row["skipped"] = "time budget spent"
                    continue
                x = torch.rand(batch, 1, cfg.image_size, cfg.image_size, device="cuda",
                               dtype=torch.float16 if precision == "fp16" else torch.float32)  # fmt: skip
                times = []
                with torch.no_grad():
                    for i in range(5 + ctx["iters"]):
                        start, end = (
                            torch.cuda.Event(enable_timing=True),
                            torch.cuda.Event(enable_timing=True),
                        )
                        start.record()
                        net(x)
                        end.record()
                        end.synchronize()
                        if i >= 5:
                            times.append(start.elapsed_time(end))
                row.update(
                    median_ms=float(np.median(times)),
                    p90_ms=float(np.percentile(times, 90)),
                    iters=len(times),
                )
    return {"timer": "CUDA events around each call, synchronized after it; cudnn.benchmark on", "rows": rows}


def part_backends(ctx: dict) -> dict:
    """What recon's GPU backends say on this machine."""
    import importlib.util

    from recon.runtime.backends.onnxruntime import available_providers, load_tensorrt_libraries

    result: dict[str, Any] = {"onnxruntime_providers": available_providers()}
    for module in ("tensorrt", "tensorrt_lean", "onnxruntime"):
        result[f"{module}_importable"] = importlib.util.find_spec(module) is not None
    result["tensorrt_provider_libraries"] = load_tensorrt_libraries() or "loaded"
    result["engine_build"] = (
        "skipped: no TensorRT builder here" if not result["tensorrt_importable"] else "see bench/gpu.py"
    )
    return result


PARTS: dict[str, Callable[[dict], dict]] = {
    "device": part_device,
    "copies": part_copies,
    "profiles": part_profiles,
    "accuracy": part_accuracy,
    "latency": part_latency,
    "backends": part_backends,
}


# ------------------------------------------------------------------------------------------------ report
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def markdown(report: dict) -> str:
    lines = [f"## recon GPU check — {report.get('device', {}).get('torch_device') or 'no CUDA device'}", "",
             f"- {report['date']}; `{report['command']}`; {report['seconds']} s; python {report['python']}",
             ""]  # fmt: skip
    for name in PARTS:
        part = report.get(name, {})
        lines += [f"### {name}", ""]
        if "skipped" in part or "error" in part:
            lines += [
                f"{'skipped' if 'skipped' in part else 'ERROR'}: {part.get('skipped') or part.get('error')}",
                "",
            ]
            continue
        rows = part.get("rows")
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (list, dict))))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
            if name == "profiles":
                for r in rows:
                    for m in r.get("maxima", []):
                        mib = m["rule_activation_bytes_fp32_graph"] / 2**20
                        measured = json.dumps(m.get("torch_fp16", m.get("torch", r.get("torch"))))
                        lines.append(f"- {r['model']} max batch {m['batch']} side {m['side']}: rule "
                                     f"{m['rule_widest_elements']:,} elements, {mib:,.0f} MiB (FP32 graph); "
                                     f"torch FP16 {measured}")  # fmt: skip
                    if "old_default_max" in r:
                        lines.append(f"- {r['model']} old default max: {json.dumps(r['old_default_max'])}")
        else:
            lines += [
                f"- {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in part.items()
            ]
        lines.append("")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    report["seconds"] = round(time.perf_counter() - STARTED, 1)
    (out / "gpu-check.json").write_text(json.dumps(finite(report), indent=1, default=str) + "\n")
    (out / "gpu-check.md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few images and calls (the device check)")
    parser.add_argument("--budget-s", type=float, default=160.0, help="stop starting parts after this long")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "."), help="default: $OUT")
    parser.add_argument("--models", help="comma-separated model-task names (default: every shipped card)")
    parser.add_argument("--footprints", type=Path, help="footprints JSON written by --write-footprints")
    parser.add_argument(
        "--write-footprints", type=Path, help="measure the footprints on the CPU, write, exit"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated of {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    import torch

    ctx: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "models": set(args.models.split(",")) if args.models else set(),
        "n_images": 8 if args.quick else 32,
        "iters": 20 if args.quick else 100,
        "left": lambda: args.budget_s - (time.perf_counter() - STARTED),
    }
    if args.write_footprints:
        with tempfile.TemporaryDirectory() as tmp:
            footprints = measure_footprints(ctx, Path(tmp))
        args.write_footprints.write_text(json.dumps(footprints, indent=1) + "\n")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
        "command": " ".join(["python", "bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "cuda": ctx["cuda"],
    }  # fmt: skip
    chosen = args.parts.split(",")
    for name in PARTS:
        if name not in chosen:
            continue
        if name == "profiles":  # the footprints first: from the file, else measured here on the CPU
            try:
                if args.footprints and args.footprints.is_file():
                    ctx["footprints"], stale = load_footprints(ctx, args.footprints)
                    with tempfile.TemporaryDirectory() as tmp:
                        ctx["footprints"].update(measure_footprints(ctx, Path(tmp), only=stale))
                    report["footprints_from"] = (
                        f"{args.footprints} (measured here: {', '.join(stale) or 'none'})"
                    )
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        ctx["footprints"] = measure_footprints(ctx, Path(tmp))
                    report["footprints_from"] = "measured in this run"
            except Exception as error:
                report[name] = {"error": first_line(error), "trace": traceback.format_exc()[-1500:]}
                write(report, args.out)
                continue
        log(f"{name}")
        try:
            report[name] = PARTS[name](ctx)
        except Exception as error:  # one part's failure must not end the check
            report[name] = {"error": first_line(error), "trace": traceback.format_exc()[-1500:]}
        write(report, args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
