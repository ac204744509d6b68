"""A real Triton server (python backend running recon.runtime) against recon.runtime in process.

    make bench-triton          # = RECON_TRITON_VENV=.triton-venv .venv/bin/python bench/triton_server.py

Exports the shipped cnn deblur and CT weights (`--triton-repo`, python flavour), starts tritonserver from the
server's venv (`make triton-env`) on 127.0.0.1, and drives both sides with the same closed loop: C client
threads, each sending R requests of batch 1 back to back. In process, the C threads share one Reconstructor
(as a host application would); against Triton each thread has its own gRPC client and the server's dynamic
batcher merges what arrives together. Reports images/s and p50/p99 latency per request, the CPU model and
flags, and Triton's own batch statistics (how many executions ran at each batch size).

(Not bench/triton.py: a script's folder comes first on sys.path, and a triton.py there shadows OpenAI's
Triton, whose import torch.export probes: every export then fails.)

`closed_loop` is also what tests/triton_server/test_triton_server.py uses for its concurrency check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_description() -> str:
    """Model name, cores and the SIMD flags that decide CPU inference speed (recon.runtime.profiling)."""
    from recon.runtime.profiling import cpu_description as describe

    return describe()


def closed_loop(
    make_call: Callable[[], Callable[[np.ndarray], Any]],
    inputs: np.ndarray,
    clients: int,
    requests: int,
) -> dict[str, Any]:
    """`clients` threads, each with its own `make_call()`, send `requests` inputs back to back.

    Returns images/s over the whole run, p50/p99 per-request latency (ms) and the errors seen.
    """
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        call = make_call()
        mine = []
        barrier.wait()
        for k in range(requests):
            x = inputs[(index * requests + k) % len(inputs)][None]
            start = time.perf_counter()
            try:
                call(x)
            except Exception as error:  # counted, reported; the caller decides whether that is a failure
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {
        "clients": clients,
        "requests": clients * requests,
        "ok": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def grpc_caller(url: str, model: str, input_name: str, output_name: str, timeout_s: float = 60.0):
    """make_call for closed_loop: one gRPC client per thread, a client-side timeout on every request."""
    import tritonclient.grpc as grpcclient

    def make_call() -> Callable[[np.ndarray], np.ndarray]:
        client = grpcclient.InferenceServerClient(url)

        def call(x: np.ndarray) -> np.ndarray:
            tensor = grpcclient.InferInput(input_name, list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer(model, [tensor], client_timeout=timeout_s)
            return result.as_numpy(output_name)

        return call

    return make_call


def batch_counts(url: str, model: str) -> dict[int, int]:
    """Triton's statistics API: executions per batch size for `model` (compute_infer counts)."""
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)
    entries = stats["model_stats"][0].get("batch_stats", [])
    return {int(e["batch_size"]): int(e["compute_infer"].get("count", 0)) for e in entries}


def export_repository(work: Path, tasks: list[str], threads: int | None) -> dict[str, Path]:
    """cnn artifacts from the shipped weights, and one Triton repository (python flavour) holding them."""
    from recon.export import ExportOptions, export_artifact

    artifacts = {}
    for task in tasks:
        out = work / f"cnn-{task}"
        triton = {"flavour": "python", "max_queue_delay_us": 1000, "python_threads": threads}
        export_artifact(
            ExportOptions(
                model="cnn", task=task, engine="none", out=out, triton_repo=work / "repo", triton=triton
            )
        )
        artifacts[task] = out
    return artifacts


def _line(label: str, r: dict[str, Any]) -> str:
    return f"{label} {r['images_per_s']:7.2f} img/s p50 {r['p50_ms']:7.2f} p99 {r['p99_ms']:7.2f} ms"


def triton_venv_python() -> Path:
    venv = Path(os.environ.get("RECON_TRITON_VENV", ROOT / ".triton-venv"))
    return (venv if venv.is_absolute() else ROOT / venv) / "bin" / "python"


def main() -> None:
    sys.path.insert(0, str(ROOT))  # recon importable when run from a checkout without install
    from recon.export.triton_server import LocalServer
    from recon.runtime import Reconstructor

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="deblur,ct")
    parser.add_argument("--clients", default="1,8", help="comma list of concurrencies")
    parser.add_argument("--requests", type=int, default=16, help="requests per client")
    parser.add_argument("--threads", type=int, help="onnxruntime threads, both sides [onnxruntime's default]")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    concurrencies = [int(c) for c in args.clients.split(",") if c]
    report: dict[str, Any] = {
        "machine": cpu_description(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/triton_server.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="recon-bench-triton-") as tmp:
        work = Path(tmp)
        artifacts = export_repository(work, tasks, args.threads)
        server = LocalServer(work / "repo", triton_venv_python(), work / "server.log").start()
        try:
            for task, artifact in artifacts.items():
                recon = Reconstructor.from_artifact(artifact, threads=args.threads)
                manifest = recon.manifest
                shape = [1, *(int(d) for d in manifest.input.shape[1:])]
                rng = np.random.default_rng(0)
                inputs = rng.random((16, *shape[1:]), dtype=np.float32)
                model = f"{manifest.name}-python"
                remote = grpc_caller(server.grpc_url, model, manifest.input.name, manifest.output.name)
                closed_loop(remote, inputs, 2, 2)  # warm-up: the stub's first run, both sides
                recon.run(inputs[:1])
                for clients in concurrencies:
                    before = batch_counts(server.grpc_url, model)
                    served = closed_loop(remote, inputs, clients, args.requests)
                    after = batch_counts(server.grpc_url, model)
                    local = closed_loop(lambda r=recon: r.run, inputs, clients, args.requests)
                    batches = {b: after.get(b, 0) - before.get(b, 0) for b in after}
                    row = {"task": task, "clients": clients, "triton": served, "in_process": local,
                           "triton_batches": {b: n for b, n in sorted(batches.items()) if n}}  # fmt: skip
                    report["results"].append(row)
                    ratio = served["images_per_s"] / local["images_per_s"]
                    print(f"{task:6} clients {clients}: {_line('triton', served)} | "
                          f"{_line('in-process', local)} | ratio {ratio:.2f}× | "
                          f"batches {row['triton_batches']}", flush=True)  # fmt: skip
                recon.close()
        finally:
            server.stop()
    print(f"machine: {report['machine']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
