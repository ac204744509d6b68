"""Trained weights: safetensors files with a JSON card each, loaded safely and checked against the card.

A shipped pair is ``weights/<model>-<task>.safetensors`` + ``weights/<model>-<task>.json``. The card holds the
model config (``create_model(**card["model"])`` rebuilds the architecture), the task/physics config, the data
recipe, training facts (steps, time, hardware, command) and the held-out metrics of the model and of the
no-learning baseline, plus the sha256 and size of the safetensors file. Nothing is unpickled: weights are
safetensors, and resume checkpoints are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from recon.runtime.io.files import sha256_of, write_json_atomic

MAX_BYTES = 16 * 1024 * 1024  # each shipped file stays under 16 MB


class WeightsError(ValueError):
    """A weights file that does not match its card, or a card that cannot be found."""


def weights_dir() -> Path:
    from recon.weights import WEIGHTS_DIR

    return Path(WEIGHTS_DIR)


def save_trained(model: nn.Module, card: dict, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem``.safetensors (FP32 state dict) and ``stem``.json (``card`` + file, bytes, sha256)."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    st_path, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    partial = st_path.with_name(st_path.name + ".partial")  # a killed run leaves the old weights whole
    save_file(state, str(partial), metadata={"model": json.dumps(card.get("model", {}))})
    partial.chmod(0o644)  # safetensors writes 0600; shipped files are read by everyone
    card = {**card, "file": st_path.name, "bytes": partial.stat().st_size, "sha256": sha256_of(partial)}
    os.replace(partial, st_path)
    write_json_atomic(card_path, card)
    return st_path, card_path


def resolve(model_name: str, task: str, weights: str | Path | None = None) -> tuple[Path, Path]:
    """(safetensors path, card path) for shipped weights or a user file (``.safetensors`` or ``.json``)."""
    if weights is None:
        stem = weights_dir() / f"{model_name}-{task}"
    else:
        stem = Path(weights)
        if stem.is_dir():
            stem = stem / f"{model_name}-{task}"
        elif stem.suffix in (".safetensors", ".json"):
            stem = stem.with_suffix("")
    st_path, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not card_path.exists():
        where = "shipped" if weights is None else "given"
        raise WeightsError(
            f"no {where} weights card {card_path} for {model_name}-{task}; "
            f"train them with `recon-train --model {model_name} --task {task}`"
        )
    return st_path, card_path


def load_trained(model_name: str, task: str, weights: str | Path | None = None) -> tuple[nn.Module, dict]:
    """The trained model (in eval mode, on the CPU) and its card.

    ``weights``: None for the shipped ``weights/<model>-<task>.*``, else a ``.safetensors`` / ``.json`` path
    (the other file sits beside it with the same stem) or a folder holding ``<model>-<task>.*``.
    Raises WeightsError when the file's sha256 differs from the card's, or the card is for another model/task.
    """
    from safetensors.torch import load_file

    from recon.training.models import create_model

    st_path, card_path = resolve(model_name, task, weights)
    card = json.loads(card_path.read_text())
    if card.get("model", {}).get("name") != model_name or card.get("task_name") != task:
        raise WeightsError(
            f"{card_path} is a card for {card.get('model', {}).get('name')}-{card.get('task_name')}, "
            f"not {model_name}-{task}"
        )
    if not st_path.exists():
        raise WeightsError(f"{st_path} is missing (its card {card_path.name} is there)")
    digest = sha256_of(st_path)
    if digest != card.get("sha256"):
        raise WeightsError(
            f"{st_path} does not match its card: sha256 {digest[:12]}… but the card says "
            f"{str(card.get('sha256'))[:12]}…; the file is corrupt or was replaced — restore it "
            f"(git checkout) or retrain"
        )
    model = create_model(**card["model"])
    model.load_state_dict(load_file(str(st_path)), strict=True)
    return model.eval(), card


def shipped_cards() -> list[Path]:
    return sorted(weights_dir().glob("*.json"))
