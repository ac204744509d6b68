"""The PyTorch pipeline an artifact was exported from, rebuilt from its manifest (for side-by-side timing)."""

from __future__ import annotations

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
