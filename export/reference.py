"""The PyTorch pipeline an artifact was exported from, rebuilt from its manifest, and its eager latency timed
into the runtime's own `LatencyReport`s: `recon-bench --compare-torch` (registered for the runtime as the
"torch" entry point of "recon.bench_references", so the runtime never imports this module)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def torch_pipeline(manifest: Any) -> tuple[Any, str]:
    """(measurement → image torch module in eval mode, a note on where its weights came from).

    Shipped weights are reloaded and checked against the manifest's sha256; a random-init artifact gets a
    freshly initialised network of the same architecture (same cost, other values); user weights are not
    recorded by path, so they too get a same-architecture network, and the note says so.
    """
    from recon.export.exporter import build_pipeline
    from recon.training.models import create_model
    from recon.training.weights import WeightsError, load_trained

    model = manifest.model
    task_cfg = manifest.task_config
    if model.get("config", {}).get("source") in ("factory", "module", "onnx"):
        return _foreign_pipeline(model, task_cfg)
    source = model.get("weights_source", "unknown")
    sha = model.get("weights_sha256")
    network, note = None, ""
    if source == "shipped":
        try:
            network, card = load_trained(model["name"], manifest.task)
            if card.get("sha256") != sha:
                network, note = None, "the shipped weights changed since export"
        except WeightsError as error:
            note = f"shipped weights unavailable ({error})"
    if network is None:
        config: dict[str, Any] = dict(model["config"])
        network = create_model(**config)
        note = note or f"{source} weights are not reloadable; same architecture, fresh initialisation"
    else:
        note = "shipped weights (sha256 matches the manifest)"
    pipeline, _fp32_modules = build_pipeline(network.eval(), task_cfg)
    return pipeline.eval(), note


def _foreign_pipeline(model: dict[str, Any], task_cfg: Any) -> tuple[Any, str]:
    """A user's network: rebuilt from the factory the manifest records (fresh weights: the checkpoint is
    recorded by hash, not by path), padded as exported. A module object or an ONNX file left no factory."""
    from recon.export.errors import ExportError
    from recon.export.exporter import build_pipeline
    from recon.export.network_source import rebuild

    config = model["config"]
    if config["source"] != "factory":
        what = "an ONNX file" if config["source"] == "onnx" else f"a module object ({config.get('class')})"
        raise ExportError(
            f"--compare-torch needs the network's factory, and this artifact was exported from {what}; "
            "export with --network PACKAGE.MODULE:FACTORY (or export_network(factory=...)) to compare"
        )
    network = rebuild(config)
    pipeline, _fp32_modules = build_pipeline(network, task_cfg)
    note = (
        f"{config['factory']} rebuilt from the manifest with fresh weights (same architecture and cost; the "
        "checkpoint is recorded by its sha256, not its path)"
    )
    return pipeline.eval(), note


def torch_reports(
    artifact: Path, batches: list[int], iters: int, warmup: int, threads: int | None
) -> tuple[list[Any], str]:
    """Eager PyTorch latency of the artifact's source pipeline per batch size (same threads, inputs of the
    manifest's input shape): ([LatencyReport "torch-eager" per batch], where the weights came from)."""
    import torch

    from recon.runtime.artifact.manifest import load_manifest
    from recon.runtime.profiling import LatencyReport

    manifest = load_manifest(artifact)
    pipeline, note = torch_pipeline(manifest)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    # a symbolic H, W (images of any size): the runtime profiler's default of 256
    _, _, height, width = (d if isinstance(d, int) else 256 for d in manifest.input.shape)
    reports = []
    for size in batches:
        batch = torch.rand(size, 1, int(height), int(width), generator=torch.Generator().manual_seed(0))
        latencies = []
        with torch.inference_mode():
            for step in range(warmup + iters):
                start = time.perf_counter()
                pipeline(batch)
                if step >= warmup:
                    latencies.append(time.perf_counter() - start)
        meta = {"backend": "torch-eager", "precision": "fp32", "threads": torch.get_num_threads()}
        reports.append(LatencyReport("torch-eager", size, latencies, {}, warmup, meta))
    return reports, note
