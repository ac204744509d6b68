"""GPU benchmark of recon's networks (issue 7): latency per precision, layout and CUDA graph; FP16 error on
real GPU arithmetic; FLOPs and bytes against the card's measured roofline; the ``gpu``-marked tests.

    python bench/gpu.py --markdown docs/gpu-benchmark.md --json gpu.json   # everything, one command
    python bench/gpu.py --quick                                   # smoke run: cnn only, 64², few iterations

One run ends within about 25 minutes: torch timings left when ``--budget-s`` (300 s, imports included) runs
out are skipped and marked, the runtime paths get ``--runtime-budget-s`` (900 s: per model an export, a
native TensorRT build and the onnxruntime TensorRT provider's build; each worker killed at
``--worker-timeout-s``, 420 s), ``pytest -m gpu`` gets ``--pytest-timeout-s`` (300 s), and the JSON and
markdown are rewritten after each step, so a run cut short still leaves its numbers (PARTIAL). For a short
check on a GPU machine without TensorRT see ``bench/gpu_check.py``.

Needs recon installed with its training extra (torch, scikit-image, safetensors: ``pip install -e .[train]``
and onnxruntime-gpu as docs/gpu.md says), and pytest for ``pytest -m gpu`` (without it: noted). Without
CUDA it runs on the CPU (perf_counter timing, FP32 variants only; the FP16 error is then CPU arithmetic,
labelled so) so that it is tested everywhere.

What it measures, per shipped model and task (``weights/<model>-<task>.json``; random init, noted, without):
- latency at batch 1, 8, 32 and ``--size``² of each variant in ``VARIANTS`` (FP32, FP16 by ``.half()`` and
  by autocast, channels-last, CUDA graph replay with static buffers), one call at a time: CUDA events around
  each call, synchronized after it, so launch overhead counts as a one-request-at-a-time server sees it;
  median and p99 after ``--warmup`` calls, over ``--iters`` calls (fewer when ``--max-seconds`` runs out:
  the JSON keeps the count). cudnn.benchmark on; TF32 off except in the ``tf32`` variant. Architectures
  shared by several tasks are timed once. CT adds a row for its FBP front end (FP32, as exported).
- FP16 error against FP32 (TF32 off) on the held-out set (realistic simulated inputs): max/mean abs,
  PSNR on outputs clipped to [0, 1] (``recon.export.parity.compare_outputs``, the export's own metric),
  PSNR to the ground truth for both, and whether it passes the export's TensorRT tolerance.
- FLOPs (``count_flops``: 2·MAC of convs/matmuls) and bytes moved: parameters and buffers once, plus every
  non-view aten op's tensor inputs read and outputs written, recorded at batch 1 in FP32 (an eager, unfused
  estimate; FP16 halves it). Activations of one image fit in the L2 cache at small batches, so a time
  below the DRAM floor is possible.
- the card once: device-to-device copy bandwidth (read + written bytes) and large-matmul rates (fp16, tf32,
  fp32); each time is reported as a multiple of its roofline floor max(flops / peak, bytes / bandwidth).
- the deployment paths, whenever importable: each ``--runtime-models`` model is exported (FP16, and a
  TensorRT engine where the builder works) and run through ``recon.runtime.Reconstructor`` on the
  onnxruntime CUDA and TensorRT providers and on native TensorRT, next to onnxruntime on the CPU: latency per
  call including host↔device copies (what a caller of ``run`` waits), and the error against the FP32 graph
  with the export's TensorRT tolerance. Each runs in a worker process with ``NVIDIA_TF32_OVERRIDE=0`` (the
  onnxruntime TensorRT provider has no TF32 switch) and a time limit; a path that is not importable is
  listed with the reason.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # the --budget-s clock includes the imports
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from json_report import finite  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from recon.export.parity import DEFAULT_TOLERANCES, compare_outputs  # noqa: E402
from recon.training import data, tasks, weights  # noqa: E402
from recon.training.models import count_flops, create_model, list_models  # noqa: E402
from recon.training.physics import FBP  # noqa: E402

TASKS = ("deblur", "ct")
TRT_TOLERANCE = DEFAULT_TOLERANCES["tensorrt"]


@dataclass(frozen=True)
class Variant:
    """One way to run a network: parameter dtype, autocast, memory layout, CUDA graph replay, TF32."""

    name: str
    description: str
    half: bool = False
    autocast: bool = False
    channels_last: bool = False
    graph: bool = False
    tf32: bool = False

    @property
    def needs_cuda(self) -> bool:
        return self.half or self.autocast or self.graph or self.tf32

    @property
    def precision(self) -> str:  # which peak and bytes its roofline floor uses
        return "fp16" if self.half or self.autocast else "tf32" if self.tf32 else "fp32"


VARIANTS = {
    v.name: v
    for v in (
        Variant("fp32", "eager, float32, NCHW"),
        Variant(
            "tf32", "eager, float32 with TF32 convs/matmuls (ORT-CUDA's and TensorRT's default)", tf32=True
        ),
        Variant("fp16", "eager, .half(), NCHW", half=True),
        Variant("autocast", "eager, float32 weights under torch.autocast(float16)", autocast=True),
        Variant("fp32-cl", "eager, float32, channels-last", channels_last=True),
        Variant("fp16-cl", "eager, .half(), channels-last", half=True, channels_last=True),
        Variant("fp32-graph", "CUDA graph replay, float32, static input/output buffers", graph=True),
        Variant(
            "fp16-cl-graph",
            "CUDA graph replay, .half(), channels-last",
            half=True,
            channels_last=True,
            graph=True,
        ),
    )
}
DEFAULT_VARIANTS = {
    "cuda": ["fp32", "fp16", "autocast", "fp16-cl", "fp32-graph", "fp16-cl-graph"],
    "cpu": ["fp32", "fp32-cl"],
}
FBP_VARIANTS = {"fp32", "tf32", "fp32-graph"}  # the FBP computes in float32 whatever the network does


@dataclass
class Arch:
    """One architecture to time: a network (or the FBP), the tasks sharing it, and its network inputs."""

    label: str
    name: str
    config: dict
    net: nn.Module
    inputs: torch.Tensor
    tasks: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ loading things
def load_network(name: str, task: str) -> tuple[nn.Module, dict | None, str]:
    """(network in eval mode, its card or None, where its weights came from): the package's loader."""
    if not (weights.weights_dir() / f"{name}-{task}.json").exists():
        return create_model(name).eval(), None, f"random init (no weights/{name}-{task}.json)"
    net, card = weights.load_trained(name, task)
    return net.eval(), card, f"weights/{name}-{task}.safetensors"


def bench_task_config(task: str, card: dict | None, size: int) -> tasks.TaskConfig:
    """The card's task config (defaults without a card) at ``size``² (CT re-derives its detector count)."""
    cfg = tasks.task_config_from_json(card["task"]) if card else tasks.task_config(task)
    return cfg if cfg.image_size == size else cfg.with_overrides(image_size=size)


# ---------------------------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def time_calls(
    fn: Callable[[], object], device: torch.device, warmup: int, iters: int, max_seconds: float
) -> dict[str, Any]:
    """Per-call latency in ms: median, p99, mean, and how many calls were timed (≥ min(iters, 30))."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if device.type == "cuda" else None
    for _ in range(iters):
        if events:
            events[0].record()
            fn()
            events[1].record()
            events[1].synchronize()
            times.append(events[0].elapsed_time(events[1]))
        else:
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
        if len(times) >= min(iters, 30) and time.perf_counter() > deadline:
            break
    t = np.asarray(times)
    median, p99, mean = float(np.median(t)), float(np.percentile(t, 99)), float(t.mean())
    return {"median_ms": median, "p99_ms": p99, "mean_ms": mean, "iters": len(times)}


def measure_peaks(device: torch.device, quick: bool) -> dict[str, Any]:
    """Copy bandwidth (GB/s, bytes read + written) and matmul rates (TFLOP/s) of this device, once."""
    cuda = device.type == "cuda"
    nbytes = (1 << 30 if not quick else 1 << 28) if cuda else 1 << 25
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    copy_t = time_calls(lambda: dst.copy_(src), device, 3, 30, 1.0)
    peaks: dict[str, Any] = {"copy_bytes": nbytes, "copy_gbps": 2 * nbytes / copy_t["median_ms"] / 1e6}
    n = (8192 if not quick else 4096) if cuda else 512
    for precision in ("fp16", "tf32", "fp32") if cuda else ("fp32",):
        dtype = torch.float16 if precision == "fp16" else torch.float32
        set_tf32(precision == "tf32")
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        t = time_calls(lambda a=a, b=b: a @ b, device, 3, 20, 1.0)
        peaks[f"{precision}_tflops"] = 2 * n**3 / t["median_ms"] / 1e9
        del a, b
    set_tf32(False)
    peaks["matmul_n"] = n
    if cuda:
        torch.cuda.empty_cache()
    return peaks


class TrafficCounter(TorchDispatchMode):
    """Bytes of every non-view aten op's tensor inputs (read) and outputs (written), parameters left out."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude, self.bytes = exclude, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        # factories (no tensor input) and views move nothing here
        if inputs and not getattr(func, "is_view", False):
            self.bytes += sum(t.nbytes for t in inputs if t.untyped_storage().data_ptr() not in self.exclude)
            self.bytes += sum(t.nbytes for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


@torch.no_grad()
def arch_costs(arch: Arch, size: int, device: torch.device) -> dict[str, int]:
    """FLOPs and bytes of one image in FP32 (the FP32 run at batch 1 on ``device``)."""
    net = copy.deepcopy(arch.net).to(device).float()
    x = arch.inputs[:1].to(device)
    net(x)  # builds lazy state (the FBP's sampling plan) outside the counts
    if isinstance(net, FBP):  # count_flops feeds an image; the FBP takes a sinogram
        with FlopCounterMode(display=False) as flop_counter:
            net(x)
        flops = flop_counter.get_total_flops()
    else:
        flops = count_flops(net, (size, size))
    state = [*net.parameters(), *net.buffers()]
    counter = TrafficCounter({t.untyped_storage().data_ptr() for t in state})
    with counter:
        net(x)
    return {
        "flops": int(flops),
        "param_bytes": sum(t.nbytes for t in state),
        "activation_bytes": counter.bytes,
    }


def prepare(net: nn.Module, variant: Variant, device: torch.device) -> nn.Module:
    net = copy.deepcopy(net).to(device).float().eval()
    if variant.half:
        net = net.half()
    return net.to(memory_format=torch.channels_last) if variant.channels_last else net


def make_call(net: nn.Module, variant: Variant, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``net(x)`` as a call without arguments; a graph variant copies ``x`` into its static input first."""
    x = x.half() if variant.half else x.float()
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def forward(inp: torch.Tensor) -> torch.Tensor:
        # autocast's weight-cast cache must be off under graph capture (CUDA-graph docs)
        with torch.autocast(
            inp.device.type, dtype=torch.float16, enabled=variant.autocast, cache_enabled=not variant.graph
        ):
            return net(inp)

    if not variant.graph:
        return lambda: forward(x)
    static_in = x.clone()
    side = torch.cuda.Stream()  # warm-up (cudnn autotune, lazy plans) on a side stream before capture
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            forward(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_in)

    def replay() -> torch.Tensor:
        static_in.copy_(x)  # a served request lands in the static buffer: part of the cost
        graph.replay()
        return static_out

    return replay


def roofline_floor_ms(costs: dict, batch: int, precision: str, peaks: dict) -> float | None:
    peak = peaks.get(f"{precision}_tflops")
    if not peak or costs["flops"] is None:
        return None
    scale = 0.5 if precision == "fp16" else 1.0  # autocast keeps some tensors FP32: its floor is a bit low
    nbytes = scale * (costs["param_bytes"] + batch * costs["activation_bytes"])
    return 1e3 * max(batch * costs["flops"] / (peak * 1e12), nbytes / (peaks["copy_gbps"] * 1e9))


@torch.no_grad()
def time_arch(
    arch: Arch, costs: dict, args: argparse.Namespace, device: torch.device, peaks: dict, deadline: float
) -> list[dict]:
    rows = []
    for vname in args.variants:
        variant, net = VARIANTS[vname], None
        if isinstance(arch.net, FBP) and vname not in FBP_VARIANTS:
            continue
        set_tf32(variant.tf32)
        for batch in args.batches:
            row: dict[str, Any] = {"arch": arch.label, "model": arch.name, "batch": batch, "variant": vname}
            if time.perf_counter() > deadline:
                rows.append({**row, "skipped": "time budget (--budget-s) spent"})
                continue
            # one failing variant (an OOM, a graph-capture error) must not end the table
            try:
                net = prepare(arch.net, variant, device) if net is None else net
                call = make_call(net, variant, arch.inputs[torch.arange(batch) % len(arch.inputs)].to(device))
                row.update(time_calls(call, device, args.warmup, args.iters, args.max_seconds))
                del call  # frees a CUDA graph's memory pool before the next one
                floor = roofline_floor_ms(costs, batch, variant.precision, peaks)
                if floor:
                    row.update(floor_ms=floor, roofline_multiple=row["median_ms"] / floor)
            except Exception as err:
                row["error"] = describe(err)
            rows.append(row)
            log(f"  {arch.label} b{batch} {vname}: " + (f"{row['median_ms']:.3f} ms" if "median_ms" in row
                                                        else row.get("error", "")))  # fmt: skip
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    set_tf32(False)
    return rows


def describe(err: BaseException) -> str:
    """One line: the exception's type and first line."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"[:300]


@torch.no_grad()
def fp16_error(
    net: nn.Module, evalset: data.EvalSet, variants: list[str], device: torch.device, chunk: int = 8
) -> list[dict]:
    """Each reduced-precision variant's output against FP32 (TF32 off) on the held-out inputs."""

    def outputs(variant: Variant) -> np.ndarray:
        set_tf32(variant.tf32)
        model, parts = prepare(net, variant, device), []
        for i in range(0, len(evalset.inputs), chunk):
            call = make_call(model, variant, evalset.inputs[i : i + chunk].to(device))
            parts.append(call().float().cpu())
        set_tf32(False)
        return torch.cat(parts).numpy()

    reference, truth = outputs(VARIANTS["fp32"]), evalset.targets.numpy()
    results = []
    for vname in variants:
        try:
            candidate = outputs(VARIANTS[vname])
        except Exception as err:
            results.append({"variant": vname, "error": describe(err)})
            continue
        metrics = compare_outputs(reference, candidate)
        ok, why = TRT_TOLERANCE.check(metrics)
        results.append({"variant": vname, **metrics, "trt_tolerance_ok": ok, "trt_tolerance_why": why,
                        "psnr_truth_fp32": compare_outputs(truth, reference)["psnr"],
                        "psnr_truth": compare_outputs(truth, candidate)["psnr"]})  # fmt: skip
    return results


def run_gpu_tests(timeout: float) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess (recon as installed)."""
    shown = "pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors tests"
    command = [sys.executable, "-m", *shown.split()]
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"ran": False, "command": shown, "reason": "pytest is not installed"}
    try:
        proc = subprocess.run(command, cwd=ROOT, env={**os.environ, **WORKER_ENV}, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {
            "ran": True,
            "command": shown,
            "exit_code": None,
            "summary": f"timed out after {timeout:.0f} s",
        }
    last = ([line for line in proc.stdout.splitlines() if line.strip()] or [""])[-1].strip("= ")
    counts = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)
    }
    summary = f"no test is marked gpu ({last})" if proc.returncode == 5 else last
    broken = [line[6:] for line in proc.stdout.splitlines() if line.startswith("ERROR ")]  # collection errors
    if broken:
        summary += f"; could not collect {', '.join(broken)}"
    tail = (proc.stdout + proc.stderr)[-4000:]
    return {"ran": True, "command": shown, "exit_code": proc.returncode, "summary": summary, "counts": counts,
            "errors": broken, "output_tail": tail}  # fmt: skip


# ------------------------------------------------------------------------------------- deployment paths
RUNTIME_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
# The onnxruntime TensorRT provider has no TF32 switch; cuBLAS/cuDNN read this at start (docs/gpu.md).
WORKER_ENV = {"NVIDIA_TF32_OVERRIDE": "0"}


def runtime_availability() -> dict[str, str]:
    """Backend → "" when it is worth a try here, else why not. No TensorRT Runtime is created here."""
    import importlib.util

    from recon.runtime.backends.onnxruntime import available_providers
    from recon.runtime.backends.tensorrt import BackendError, cuda_device

    providers = available_providers()
    offered = ", ".join(providers) or "onnxruntime is not installed"
    why = {
        "onnxruntime-cpu": "" if "CPUExecutionProvider" in providers else offered,
        "onnxruntime-cuda": "" if "CUDAExecutionProvider" in providers else f"no CUDA provider ({offered})",
        "onnxruntime-tensorrt": ""
        if "TensorrtExecutionProvider" in providers
        else f"no TensorRT provider ({offered})",
    }
    if not any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_lean")):
        why["tensorrt"] = "neither tensorrt nor tensorrt_lean is importable"
    else:
        try:
            cuda_device(0)
            why["tensorrt"] = ""
        except BackendError as err:
            why["tensorrt"] = str(err)
    return why


def export_for_runtime(name: str, task: str, size: int, folder: Path, timeout: float) -> tuple[Path, str]:
    """recon-export in a worker: FP16 graph, a TensorRT engine where the builder works (--engine auto)."""
    out = folder / f"{name}-{task}"
    args = ["--model", name, "--task", task, "--size", str(size), "--fp16", "--engine", "auto",
            "--batch", "1:8:32", "--out", str(out), "--force"]  # fmt: skip
    if not (weights.weights_dir() / f"{name}-{task}.json").exists():
        args.append("--random-init")
    elif (
        size != tasks.task_config(task).image_size
    ):  # shipped weights at a smaller --size (--quick): timing only
        args.append("--allow-geometry-change")
    code = "import sys\nfrom recon.export.cli import main\nmain(sys.argv[1:])"
    env = {**os.environ, **WORKER_ENV}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300])
    return out, " ".join(args)


def runtime_worker(spec: dict) -> dict:
    """In the worker process: one backend on one artifact, against onnxruntime's FP32 graph on the CPU."""
    from recon.runtime import Reconstructor

    inputs = np.load(spec["inputs"])
    with Reconstructor.from_artifact(spec["artifact"], backend="onnxruntime-cpu", precision="fp32") as ref:
        reference = ref.run(inputs)
    with Reconstructor.from_artifact(spec["artifact"], backend=spec["backend"]) as rec:
        result: dict[str, Any] = {"backend": rec.backend_name, "precision": rec.precision, "timings": []}
        output = rec.run(inputs)
        metrics = compare_outputs(reference, output)
        ok, why = TRT_TOLERANCE.check(metrics)
        result.update(max_abs=metrics["max_abs"], psnr=metrics["psnr"], trt_tolerance_ok=ok,
                      trt_tolerance_why=why)  # fmt: skip
        for batch in spec["batches"]:
            x = inputs[np.arange(batch) % len(inputs)]
            t = time_calls(lambda x=x: rec.run(x), torch.device("cpu"), spec["warmup"], spec["iters"],
                           spec["max_seconds"])  # fmt: skip
            result["timings"].append({"batch": batch, **t})
    return result


def time_runtime_paths(args: argparse.Namespace, report: dict) -> list[dict]:
    """Each --runtime-models model through recon.runtime on every backend that can run here, in workers."""
    import tempfile

    deadline = time.perf_counter() + args.runtime_budget_s
    availability = runtime_availability()
    report["runtime_availability"] = availability
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="recon-gpu-bench-") as tmp:
        folder = Path(tmp)
        for name, task in args.runtime_models:
            entry: dict[str, Any] = {"model": name, "task": task, "backends": []}
            rows.append(entry)
            left = deadline - time.perf_counter()
            if left < 10:
                entry["skipped"] = "runtime budget (--runtime-budget-s) spent"
                continue
            log(f"{name}-{task}: exporting for the runtime paths (FP16, engine where the builder works)")
            try:
                artifact, entry["export"] = export_for_runtime(name, task, args.size, folder, min(left, 600))
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                entry["error"] = f"export failed: {describe(err)}"
                continue
            inputs = folder / f"{name}-{task}-inputs.npy"
            evalset = data.heldout_set(bench_task_config(task, None, args.size), max(args.batches), args.size)
            np.save(inputs, evalset.measurements.numpy().astype(np.float32))
            for backend in RUNTIME_BACKENDS:
                row: dict[str, Any] = {"backend": backend}
                entry["backends"].append(row)
                if availability[backend]:
                    row["skipped"] = availability[backend]
                    continue
                left = deadline - time.perf_counter()
                if left < 5:
                    row["skipped"] = "runtime budget (--runtime-budget-s) spent"
                    continue
                spec = {"artifact": str(artifact), "backend": backend, "inputs": str(inputs),
                        "iters": args.iters, "warmup": args.warmup, "max_seconds": args.max_seconds,
                        "batches": [b for b in args.batches if b <= 32]}  # fmt: skip
                log(f"  {name}-{task} on {backend}")
                row.update(run_worker(spec, timeout=min(left, args.worker_timeout_s)))
    return rows


def run_worker(spec: dict, timeout: float) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--runtime-worker", json.dumps(spec)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **WORKER_ENV})  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s (--worker-timeout-s)"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"error": tail[:300]}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- reporting
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
    }
    if device.type != "cuda":
        return {**info, "name": f"CPU ({platform.machine()}, {os.cpu_count()} cores)", "driver": None}
    props = torch.cuda.get_device_properties(device)
    info.update(name=props.name, driver=None, memory_gib=round(props.total_memory / 2**30, 1),
                multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                l2_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1))  # fmt: skip
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    try:
        smi = subprocess.run(query, capture_output=True, text=True, timeout=30)
        name, driver = (s.strip() for s in smi.stdout.splitlines()[0].split(","))
        info.update(name=name, driver=driver)
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        pass  # torch's name stays; the driver stays unknown
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or None
    except OSError:  # a copy of the tree without git
        return None


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def latency_table(report: dict) -> list[str]:
    s = report["settings"]
    variants = [v for v in s["variants"] if any(r["variant"] == v for r in report["timings"])]
    head = ["model", "batch", "GFLOP", "MB moved fp32 / fp16", *variants, "fastest (vs fp32)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for m in report["models"]:
        for batch in s["batches"]:
            rows = {
                r["variant"]: r for r in report["timings"] if r["arch"] == m["label"] and r["batch"] == batch
            }
            cells = []
            for v in variants:
                r = rows.get(v, {"skipped": "n/a"})
                if "median_ms" not in r:
                    cells.append("error" if "error" in r else "–" if r["skipped"] == "n/a" else "skipped")
                    continue
                roof = f" (×{r['roofline_multiple']:.2g})" if "roofline_multiple" in r else ""
                cells.append(f"{_ms(r['median_ms'])} / {_ms(r['p99_ms'])}{roof}")
            best = min(
                (r for r in rows.values() if "median_ms" in r), key=lambda r: r["median_ms"], default=None
            )
            fastest = "–" if best is None else f"{best['variant']} {_ms(best['median_ms'])}"
            if best is not None and "median_ms" in rows.get("fp32", {}):
                fastest += f" ({rows['fp32']['median_ms'] / best['median_ms']:.1f}×)"
            counted = m["flops"] is not None
            moved = (m["param_bytes"] + batch * m["activation_bytes"]) / 1e6 if counted else 0.0
            gflop, mb = (
                (f"{batch * m['flops'] / 1e9:.1f}", f"{moved:.0f} / {moved / 2:.0f}") if counted else "??"
            )
            lines.append(f"| {m['label']} | {batch} | {gflop} | {mb} |" + "".join(f" {c} |" for c in cells)
                         + f" {fastest} |")  # fmt: skip
    lines += ["", "Variants: " + "; ".join(f"`{v}` {VARIANTS[v].description}" for v in variants) + "."]
    errors = [r for r in report["timings"] if "error" in r]
    return lines + [f"- error, {r['arch']} b{r['batch']} {r['variant']}: {r['error']}" for r in errors]


def accuracy_table(report: dict) -> list[str]:
    head = ["model", "task", "weights", "variant", "max abs", "mean abs", "PSNR vs FP32 dB",
            "PSNR to truth: fp32 → variant", "TRT tolerance"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for a in report["accuracy"]:
        for r in a["results"]:
            start = f"| {a['model']} | {a['task']} | {a['weights']} | {r['variant']} |"
            if "error" in r:
                lines.append(f"{start} error: {r['error']} | | | | |")
                continue
            verdict = "pass" if r["trt_tolerance_ok"] else f"FAIL: {r['trt_tolerance_why']}"
            lines.append(f"{start} {r['max_abs']:.2e} | {r['mean_abs']:.1e} | {r['psnr']:.1f} | "
                         f"{r['psnr_truth_fp32']:.2f} → {r['psnr_truth']:.2f} | {verdict} |")  # fmt: skip
    return lines


def runtime_table(report: dict) -> list[str]:
    """One row per (model, task, backend): latency per call with copies, error against the FP32 graph."""
    batches = [b for b in report["settings"]["batches"] if b <= 32]
    head = ["model", "task", "backend", "precision", *[f"b{b} ms median / p99" for b in batches],
            "max abs vs FP32", "TRT tolerance"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    notes = []
    for entry in report["runtime"]:
        start = f"| {entry['model']} | {entry['task']} |"
        if "error" in entry or "skipped" in entry:
            notes.append(f"- {entry['model']}-{entry['task']}: {entry.get('error') or entry.get('skipped')}")
            continue
        for row in entry["backends"]:
            if "skipped" in row or "error" in row:
                why = f"not run, {row['skipped']}" if "skipped" in row else f"error, {row['error']}"
                notes.append(f"- {entry['model']}-{entry['task']} {row['backend']}: {why}")
                continue
            times = {t["batch"]: t for t in row["timings"]}
            cells = [f"{_ms(times[b]['median_ms'])} / {_ms(times[b]['p99_ms'])}" if b in times else "–"
                     for b in batches]  # fmt: skip
            verdict = "pass" if row["trt_tolerance_ok"] else f"FAIL: {row['trt_tolerance_why']}"
            lines.append(f"{start} {row['backend']} | {row['precision']} | " + " | ".join(cells)
                         + f" | {row['max_abs']:.2e} | {verdict} |")  # fmt: skip
    return lines + [""] + notes


def render_markdown(report: dict) -> str:
    dev, s, peaks, t = report["device"], report["settings"], report["peaks"], report["pytest"]
    rates = ", ".join(
        f"{p} {peaks[p + '_tflops']:.3g}" for p in ("fp16", "tf32", "fp32") if p + "_tflops" in peaks
    )
    tol = f"max abs ≤ {TRT_TOLERANCE.atol:g} and PSNR ≥ {TRT_TOLERANCE.min_psnr:g} dB"
    partial = " — PARTIAL: the run was cut short" if report["partial"] else ""
    timer = "CUDA events, synchronized per call" if dev["type"] == "cuda" else "perf_counter"
    tests = (
        f"`{t['command']}`: {t['summary']} (exit {t['exit_code']})" if t["ran"] else f"not run: {t['reason']}"
    )
    lines = [
        f"## GPU benchmark: {dev['name']}", "",
        f"- {report['date']}, commit {report['commit'] or '?'}, driver {dev.get('driver') or '?'}, torch "
        f"{dev['torch']} (CUDA {dev['cuda']}, cuDNN {dev['cudnn']}){partial}",
        f"- command: `{report['command']}`",
        f"- card: copy {peaks['copy_gbps']:.0f} GB/s (device to device, {peaks['copy_bytes'] >> 20} MiB, "
        f"bytes read + written); matmul {rates} TFLOP/s ({peaks['matmul_n']}³)", "",
        f"### Latency, {s['size']}×{s['size']}", "",
        f"ms per call, median / p99 over up to {s['iters']} calls after {s['warmup']} warm-up "
        f"({timer}); "
        "(×N) = median / roofline floor.", "",
        *latency_table(report), "",
        f"### Reduced-precision error vs FP32 ({s['accuracy_device']} arithmetic)", "",
        f"{s['n_images']} held-out images per task (simulated measurements); PSNR on outputs clipped to "
        f"[0, 1]; the export's TensorRT tolerance is {tol}.", "",
        *accuracy_table(report), "",
        "### Deployment paths (recon.runtime)", "",
        "ms per `Reconstructor.run` call (perf_counter; host↔device copies and input checks included), each "
        "backend in a worker with NVIDIA_TF32_OVERRIDE=0; error against onnxruntime's FP32 graph on the CPU.",
        "",
        *(runtime_table(report) if report["runtime"] else ["not run"]), "",
        "### Tests marked gpu", "",
        tests, "",
        "### Notes", "",
        *[f"- {n}" for n in report["notes"]],
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_outputs(report: dict, args: argparse.Namespace) -> str:
    markdown = render_markdown(report)
    if args.json:
        Path(args.json).write_text(json.dumps(finite(report), indent=1, default=str, allow_nan=False) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    return markdown


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--models", help="comma-separated (default: every registered model; --quick: cnn)")
    add("--tasks", default="deblur,ct", help="comma-separated (default: deblur,ct)")
    add("--batches", help="comma-separated batch sizes (default: 1,8,32; --quick: 1)")
    add("--iters", type=int, help="timed calls per measurement (default: 200; --quick: 10)")
    add("--warmup", type=int, help="untimed calls first (default: 20; --quick: 2)")
    add("--size", type=int, help="image side (default: 256; --quick: 64)")
    defaults = {k: ",".join(v) for k, v in DEFAULT_VARIANTS.items()}
    add("--variants", help=f"comma-separated, of {', '.join(VARIANTS)} (default: {defaults['cuda']}; "
        f"without CUDA: {defaults['cpu']})")  # fmt: skip
    add("--n-images", type=int, help="held-out images per task for the FP16 error (default: 16; --quick: 2)")
    add(
        "--max-seconds", type=float, default=1.0, help="end a measurement after this long (once 30 calls ran)"
    )
    add("--budget-s", type=float, default=300.0,
        help="skip the torch timings left after this long (default: 300)")  # fmt: skip
    add("--runtime-paths", action=argparse.BooleanOptionalAction,
        help="export and time recon.runtime's backends (default: with CUDA)")  # fmt: skip
    add("--runtime-models", help="model:task pairs for the runtime paths "
        "(default: resunet:deblur,resunet:ct; --quick: cnn:deblur)")  # fmt: skip
    # each model: an export (~1 min on a GPU machine's CPU, parity included), then a native TensorRT build and
    # the onnxruntime TensorRT provider's own build (minutes each for a ResUNet): 2 models need ~15 min
    add("--runtime-budget-s", type=float, default=900.0, help="time for all runtime paths (default: 900)")
    add("--worker-timeout-s", type=float, default=420.0,
        help="limit of one runtime worker; an engine build counts (default: 420)")  # fmt: skip
    add("--pytest", action=argparse.BooleanOptionalAction, help="run `pytest -m gpu` (default: with CUDA)")
    add("--pytest-timeout-s", type=float, default=300.0,
        help="limit of `pytest -m gpu`; its engine builds take minutes (default: 300)")  # fmt: skip
    add("--device", choices=("auto", "cuda", "cpu"), default="auto")
    add("--quick", action="store_true", help="smoke run: cnn at 64², batch 1, few calls")
    add("--markdown", metavar="FILE", help="also write the markdown section here")
    add("--json", metavar="FILE", help="write every number here")
    args = p.parse_args(argv)
    q = args.quick
    args.models = (args.models or ("cnn" if q else ",".join(list_models()))).split(",")
    args.tasks = args.tasks.split(",")
    args.batches = [int(b) for b in (args.batches or ("1" if q else "1,8,32")).split(",")]
    args.iters, args.size = args.iters or (10 if q else 200), args.size or (64 if q else 256)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 20)
    args.n_images = args.n_images or (2 if q else 16)
    args.variants = args.variants.split(",") if args.variants else None
    pairs = args.runtime_models or ("cnn:deblur" if q else "resunet:deblur,resunet:ct")
    args.runtime_models = [tuple(pair.split(":", 1)) for pair in pairs.split(",")]
    if any(len(pair) != 2 or pair[1] not in TASKS for pair in args.runtime_models):
        p.error(f"--runtime-models takes model:task pairs (task one of {', '.join(TASKS)}), got {pairs!r}")
    for given, known, what in ((args.models, list_models(), "model"), (args.tasks, TASKS, "task"),
                               (args.variants or [], list(VARIANTS), "variant")):  # fmt: skip
        if set(given) - set(known):
            p.error(
                f"unknown {what} {', '.join(sorted(set(given) - set(known)))}; choose from {', '.join(known)}"
            )
    return args


def collect_networks(args: argparse.Namespace, device: torch.device, report: dict) -> list[Arch]:
    """Load every (model, task), measure its reduced-precision error, and return the architectures to time."""
    notes, archs = report["notes"], {}
    error_variants = [v for v in args.variants if VARIANTS[v].precision != "fp32" and not VARIANTS[v].graph]
    for task in args.tasks:
        for name in args.models:
            try:
                net, card, source = load_network(name, task)
            except Exception as err:  # a stale or corrupt card: time the architecture all the same
                notes.append(f"{name}-{task}: weights not loaded ({describe(err)})")
                net, card, source = create_model(name).eval(), None, "random init (weights unusable)"
            if card is None:
                notes.append(
                    f"{name}-{task}: {source}; the timings hold, its error is an untrained network's"
                )
            cfg = bench_task_config(task, card, args.size)
            log(f"{name}-{task}: held-out set ({args.n_images} images), reduced-precision error")
            evalset = data.heldout_set(cfg, args.n_images, args.size)
            try:
                results = fp16_error(net, evalset, error_variants or ["fp16"], device)
            except Exception as err:  # the FP32 reference itself failed
                results = [{"variant": "fp32", "error": describe(err)}]
            report["accuracy"].append({"model": name, "task": task, "weights": source, "results": results})
            arch = archs.setdefault(json.dumps(net.config, sort_keys=True),
                                    Arch(name, name, net.config, net, evalset.inputs))  # fmt: skip
            arch.tasks.append(task)
            if task == "ct" and "fbp" not in archs:  # what the CT pipeline runs before the network
                ct, label = tasks.build_physics(cfg), f"fbp ({cfg.n_views} views)"
                config = {**ct.to_config(), "filter": cfg.filter}
                archs["fbp"] = Arch(
                    label, "fbp", config, FBP(ct, cfg.filter).eval(), evalset.measurements, ["ct"]
                )
    names = [a.name for a in archs.values()]
    for arch in archs.values():  # one name, two architectures (cards trained with other presets): say which
        if names.count(arch.name) > 1:
            arch.label = f"{arch.name} ({'/'.join(arch.tasks)})"
    return list(archs.values())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--runtime-worker"]:  # one backend in a process of its own (run_worker)
        print(json.dumps(finite(runtime_worker(json.loads(argv[1])))))
        return 0
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if args.device == "cuda" and not cuda:
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    notes: list[str] = []
    args.variants = args.variants or DEFAULT_VARIANTS[device.type]
    if not cuda:
        dropped = [v for v in args.variants if VARIANTS[v].needs_cuda]
        args.variants = [v for v in args.variants if not VARIANTS[v].needs_cuda]
        skipped = f", skipped {', '.join(dropped)}" if dropped else ""
        notes.append(
            f"no CUDA device: a CPU run (perf_counter timing){skipped}; FP16, autocast, TF32 and CUDA "
            "graphs need CUDA. The FP16 error here is CPU arithmetic, not the GPU's: it sets no tolerance"
        )
    torch.backends.cudnn.benchmark = True  # what a deployment does; the warm-up absorbs the autotuning
    set_tf32(False)
    keys = ["models", "tasks", "batches", "iters", "warmup", "size", "variants", "n_images", "max_seconds",
            "budget_s", "quick", "runtime_models", "runtime_budget_s", "worker_timeout_s",
            "pytest_timeout_s"]  # fmt: skip
    report: dict[str, Any] = {
        "device": device_info(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "bench/gpu.py", *argv]),
        "commit": git_commit(), "recon_from": str(Path(weights.__file__).resolve().parents[1]),
        "settings": {**{k: getattr(args, k) for k in keys}, "cudnn_benchmark": True,
                     "tf32": "off except in the tf32 variant", "accuracy_device": "GPU" if cuda else "CPU"},
        "peaks": {}, "models": [], "timings": [], "accuracy": [], "notes": notes, "partial": True,
        "pytest": {"ran": False, "reason": "not run yet"}, "runtime": [], "runtime_availability": {},
    }  # fmt: skip
    log(f"device: {report['device']['name']}; copy bandwidth and matmul rates")
    report["peaks"] = measure_peaks(device, args.quick)
    archs = collect_networks(args, device, report)  # the error first: it sets the export's FP16 tolerances

    deadline = STARTED + args.budget_s
    for arch in archs:
        try:
            costs = arch_costs(arch, args.size, device)
        except Exception as err:  # no roofline for this one, but its timings still count
            report["notes"].append(f"{arch.label}: FLOPs/bytes not counted ({describe(err)})")
            costs = {"flops": None, "param_bytes": None, "activation_bytes": None}
        params = sum(p.numel() for p in arch.net.parameters())
        report["models"].append({"label": arch.label, "name": arch.name, "tasks": arch.tasks,
                                 "config": arch.config, "parameters": params, **costs})  # fmt: skip
        report["timings"] += time_arch(arch, costs, args, device, report["peaks"], deadline)
        write_outputs(report, args)  # partial results survive a run cut short

    if cuda if args.runtime_paths is None else args.runtime_paths:
        report["runtime"] = time_runtime_paths(args, report)
        write_outputs(report, args)
    else:
        notes.append("runtime paths not run (no CUDA; --runtime-paths runs them anyway)")
    run_tests = cuda if args.pytest is None else args.pytest
    report["pytest"] = run_gpu_tests(timeout=args.pytest_timeout_s) if run_tests else {
        "ran": False, "reason": "no CUDA device, where they skip (--pytest runs them anyway)"}  # fmt: skip
    if any("skipped" in r for r in report["timings"]):
        notes.append(
            f"the time budget ({args.budget_s:.0f} s) ran out: later timings skipped (raise --budget-s)"
        )
    notes += [
        "bytes moved: parameters and buffers once, plus each non-view aten op's tensor inputs and outputs, "
        "counted at batch 1 in FP32 (eager and unfused); FP16 halves it. A small batch's activations fit in "
        "L2, so ×N < 1 is possible",
        "FLOPs: recon's count_flops (FlopCounterMode: 2·MAC of convs and matmuls); element-wise ops are not "
        "counted",
        "roofline floor = max(FLOPs / matmul rate of the variant's precision, bytes / copy bandwidth)",
    ]
    report["partial"], report["seconds"] = False, round(time.perf_counter() - STARTED, 1)
    print(write_outputs(report, args), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
