"""What recon.runtime's Python costs per call on top of the numpy checks it runs (docs/benchmarks.md, "Head to
head"): `Reconstructor.run` against the same work written out bare on the very same OpenVINO infer request
(input min/max, infer, output copy, output min/max, clip), alternating call by call, so both sides meet the
same cache state and the same machine speed. Prints the median per-call difference and its share of a call.

Why a separate measurement: right after an inference the interpreter's own code and the arrays come from
memory, so Python statements cost several times what a loop over them shows; only in place does it show.

    python bench/per_call_cost.py ARTIFACT [--precision bf16] [--batch 1] [--calls 600]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recon.runtime import Reconstructor
from recon.runtime.profiling import cpu_description


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="bf16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=600, help="pairs of calls")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)

    rec = Reconstructor.from_artifact(
        args.artifact, backend="openvino", precision=args.precision, threads=args.threads, consistency=False
    )
    height, width = (side or 256 for side in rec.input_hw)  # any-size graphs: 256²
    x = np.random.default_rng(0).random((args.batch, 1, height, width), dtype=np.float32)
    rec.run(x)  # compiles the static graph for this shape; its one request is then idle in the pool
    idle = rec.backend.compiled_for(x.shape)[1]
    request = idle.get_nowait()
    idle.put(request)  # the same request recon.run borrows: one side at a time, never together
    low, high = rec.value_range or (-np.inf, np.inf)

    def bare() -> np.ndarray:
        x.min(), x.max()
        out = request.infer({0: x}, share_inputs=True, share_outputs=True)[0].copy()
        out.min(), out.max()
        return np.clip(out, low, high, out=out)

    sides = {"recon": lambda: rec.run(x), "bare": bare}
    for _ in range(5):
        sides["recon"](), sides["bare"]()
    extra, base = [], []
    for i in range(args.calls):
        seconds = {}
        for name in ("recon", "bare") if i % 2 else ("bare", "recon"):
            start = time.perf_counter()
            sides[name]()
            seconds[name] = time.perf_counter() - start
        extra.append(seconds["recon"] - seconds["bare"])
        base.append(seconds["bare"])
    median_extra, median_base = float(np.median(extra)), float(np.median(base))
    print(
        f"{args.precision} batch {args.batch}: recon.run − the same checks bare: {1e6 * median_extra:.0f} µs "
        f"per call (median of {args.calls} pairs), {100 * median_extra / median_base:.2f}% of a "
        f"{1e3 * median_base:.2f} ms call"
    )


if __name__ == "__main__":
    main()
