"""Fixtures for the export tests: small geometries, saved random weights, artifacts built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Small enough for 2 shared cores: every export of these takes a few seconds.
SMALL = {"deblur": {"image_size": 32}, "ct": {"image_size": 32, "n_views": 20}}
BATCH = (1, 2, 4)


@pytest.fixture(scope="session")
def saved_weights(tmp_path_factory: pytest.TempPathFactory):
    """Save a randomly initialised model as user weights (card + safetensors), so tests can rebuild the
    exact torch network the artifact was exported from."""
    from recon.training.models import create_model
    from recon.training.tasks import task_config
    from recon.training.weights import save_trained

    root = tmp_path_factory.mktemp("weights")
    cache: dict[tuple[str, str], Path] = {}

    def get(model: str, task: str) -> Path:
        if (model, task) not in cache:
            import torch

            torch.manual_seed(7)
            network = create_model(model)
            card = {
                "model": network.config,
                "task_name": task,
                "task": task_config(task, **SMALL[task]).to_json(),
            }
            st_path, _ = save_trained(network, card, root / f"{model}-{task}")
            cache[(model, task)] = st_path
        return cache[(model, task)]

    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, saved_weights):
    """export(model, task, **options) -> (artifact dir, summary); each distinct call runs once per session."""
    from recon.export.exporter import ExportOptions, export_artifact

    root = tmp_path_factory.mktemp("artifacts")
    cache: dict[Any, tuple[Path, dict]] = {}

    def export(model: str, task: str, *, weights: bool = True, **options: Any) -> tuple[Path, dict]:
        key = (model, task, weights, tuple(sorted(options.items())))
        if key not in cache:
            out = root / f"{model}-{task}-{len(cache)}"
            settings = {"engine": "none", "batch": BATCH, "threads": 1, "fp16": True}
            settings["consistency_images"] = 16  # the check's own tests calibrate on more
            settings.update(options)
            opts = ExportOptions(
                model=model,
                task=task,
                out=out,
                weights=saved_weights(model, task) if weights else None,
                random_init=not weights,
                task_overrides=dict(SMALL[task]),
                **settings,
            )
            cache[key] = (out, export_artifact(opts))
        return cache[key]

    return export


@pytest.fixture(scope="session")
def torch_pipeline():
    """torch_pipeline(weights, model, task): the FP32 measurement → image module an artifact came from."""

    def build(weights: Path, model: str, task: str):
        from recon.training.tasks import ReconstructionPipeline, task_config
        from recon.training.weights import load_trained

        network, _ = load_trained(model, task, weights)
        return ReconstructionPipeline(network, task_config(task, **SMALL[task])).eval()

    return build


@pytest.fixture(scope="session")
def simulated():
    """simulated(task, n, seed): (measurements, clean) float32 batches from the task's own simulator."""

    def make(task: str, n: int, seed: int = 99):
        from recon.export.parity import simulated_inputs
        from recon.training.tasks import task_config

        cfg = task_config(task, **SMALL[task])
        measurements, clean = simulated_inputs(cfg, [n], cfg.image_size, seed=seed)
        return measurements[n], clean[n]

    return make
