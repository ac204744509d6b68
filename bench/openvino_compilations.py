"""Does recon compile its OpenVINO graphs worse than a user would? And how far apart are two compilations
of one graph with the same settings? (docs/benchmarks.md, "Head to head").

Each side brings several compilations of the same ONNX file at one fixed shape, timed head to head
(`bench/runtime.py`'s `head_to_head`: paired rounds, rotating order, bootstrap interval), as ratios to
plain "OpenVINO direct" compilations:
  - another set of the same plain compilations (what the method resolves),
  - the same settings plus NUM_STREAMS=1 (recon sets it),
  - read from bytes, cloned and reshaped, as the backend does,
  - the same with the dynamic graph compiled beside it, as the backend keeps it.

    python bench/openvino_compilations.py ARTIFACT [--precision bf16] [--batch 8] [--rounds 15]
                                          [--instances 3]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.profiling import cpu_description

HINTS = {"fp32": ("f32", "model.onnx"), "bf16": ("bf16", "model.onnx"), "int8": ("f32", "model.int8.onnx")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--precision", choices=sorted(HINTS), default="bf16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import openvino as ov

    spec = importlib.util.spec_from_file_location("bench_runtime", Path(__file__).with_name("runtime.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]

    hint, file = HINTS[args.precision]
    path = args.artifact / file
    x = np.random.default_rng(0).random((args.batch, 1, 256, 256), dtype=np.float32)
    base = {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": args.threads,
    }
    kept: list[Any] = []  # compiled graphs the sides hold on to

    def compiled(style: str, extra: dict, dynamic_beside: bool = False):
        core = ov.Core()
        if style == "path":
            model = core.read_model(str(path))
        else:
            original = core.read_model(path.read_bytes())
            if dynamic_beside:
                kept.append(core.compile_model(original, "CPU", {**base, **extra}))
            model = original.clone()
        model.reshape({0: ov.PartialShape(list(x.shape))})
        request = core.compile_model(model, "CPU", {**base, **extra}).create_infer_request()
        kept.append(request)
        return lambda: request.infer({0: x}, share_inputs=True)

    streams = {"NUM_STREAMS": "1"}
    sides = {
        "bytes + clone + reshape, NUM_STREAMS=1 (recon)": lambda: compiled("bytes", streams),
        "OpenVINO direct": lambda: compiled("path", {}),
        "OpenVINO direct, other compilations": lambda: compiled("path", {}),
        "OpenVINO direct + NUM_STREAMS=1": lambda: compiled("path", streams),
        "recon's way, dynamic graph beside it": lambda: compiled("bytes", streams, dynamic_beside=True),
    }
    built = {name: [make() for _ in range(args.instances)] for name, make in sides.items()}
    print(f"CPU: {cpu_description()}; {file}, hint {hint}, batch {args.batch}, {args.instances} compilations "
          f"a side, {args.rounds} rounds", flush=True)  # fmt: skip
    result = bench.head_to_head(built, args.rounds, 2, 0.0)
    for name, r in result.items():
        lo, hi = r["ratio_ci95"]
        ms = 1e3 * r["median_s"] / args.batch
        print(f"{name:48s} {ms:7.2f} ms/image   ÷ direct {r['ratio_to_peer']:.3f} ({lo:.3f}–{hi:.3f})")


if __name__ == "__main__":
    main()
