"""Static vs dynamic input shapes in OpenVINO's CPU plugin, on an artifact's ONNX files (docs/benchmarks.md).

    .venv/bin/python bench/openvino_shapes.py ARTIFACT [--threads 2] [--rounds 5] [--size 256]

For each file/precision (model.onnx f32 and bf16 where the CPU has it, model.int8.onnx) and batch 1 and 8,
compiles the graph twice with the batch fixed, once with H × W left dynamic and once with the whole shape
fixed, and times them interleaved (ms per image, medians). Why recon.runtime's OpenVINO backend compiles one
static graph per input shape (runtime/backends/openvino.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import openvino as ov

    from recon.runtime.backends.openvino import bf16_refusal_here
    from recon.runtime.profiling import cpu_description

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    core = ov.Core()
    print(f"CPU: {cpu_description()}; OpenVINO {ov.__version__}")
    runs = [("model.onnx", "f32"), ("model.int8.onnx", "f32")]
    if bf16_refusal_here(core) is None:
        runs.insert(1, ("model.onnx", "bf16"))
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": args.threads}
    print(
        "| file | hint | batch | dynamic H×W (ms/image) | static (ms/image) | static ÷ dynamic "
        "| compile dynamic / static (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for file, hint in runs:
        if not (args.artifact / file).exists():
            continue
        for batch in (1, 8):
            x = np.random.default_rng(0).random((batch, 1, args.size, args.size), dtype=np.float32)
            requests, compile_s = {}, {}
            for label, shape in (("dynamic", [batch, 1, -1, -1]), ("static", list(x.shape))):
                model = core.read_model(str(args.artifact / file))
                model.reshape({0: ov.PartialShape(shape)})
                start = time.perf_counter()
                compiled = core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": hint})
                compile_s[label] = time.perf_counter() - start
                requests[label] = compiled.create_infer_request()
            times: dict[str, list[float]] = {label: [] for label in requests}
            for round_ in range(args.rounds):
                order = list(requests) if round_ % 2 == 0 else list(reversed(requests))
                for label in order:
                    requests[label].infer({0: x}, share_inputs=True)  # untimed: settles caches
                    start = time.perf_counter()
                    for _ in range(args.iters):
                        requests[label].infer({0: x}, share_inputs=True)
                    times[label].append((time.perf_counter() - start) / args.iters / batch)
            dyn, sta = (1e3 * float(np.median(times[k])) for k in ("dynamic", "static"))
            print(f"| {file} | {hint} | {batch} | {dyn:.1f} | {sta:.1f} | {sta / dyn:.3f} | "
                  f"{compile_s['dynamic']:.2f} / {compile_s['static']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
