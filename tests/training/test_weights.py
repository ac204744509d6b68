"""Weights: every shipped card matches its file; loading is safe and refuses tampered files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recon.runtime.io.files import sha256_of
from recon.training.models import create_model
from recon.training.weights import (
    MAX_BYTES,
    WeightsError,
    load_trained,
    save_trained,
    shipped_cards,
)

CARDS = shipped_cards()


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_shipped_card_matches_its_file(card_path: Path):
    card = json.loads(card_path.read_text())
    st = card_path.with_suffix(".safetensors")
    assert st.exists(), f"{st.name} missing"
    assert st.stat().st_size <= MAX_BYTES
    assert card["sha256"] == sha256_of(st)
    assert card["name"] == card_path.stem == f"{card['model']['name']}-{card['task_name']}"
    for key in ("model", "task", "data", "training", "metrics"):
        assert key in card
    heldout = card["metrics"]["heldout"]
    assert heldout["n"] >= 32 and {"psnr", "ssim", "re"} <= set(heldout["model"]) <= set(heldout["baseline"])


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_shipped_card_was_made_by_its_recipe(card_path: Path):
    import shlex

    from recon.training.recipes import recipes_for

    card = json.loads(card_path.read_text())
    budget = card["training"]["fit"]["time_budget"]  # a GPU run's budget is the script's (train_gpu.py)
    assert shlex.split(card["training"]["command"])[1:] in recipes_for(card_path.stem, budget)


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_shipped_weights_load(card_path: Path):
    card = json.loads(card_path.read_text())
    model, loaded_card = load_trained(card["model"]["name"], card["task_name"])
    assert not model.training and loaded_card == card
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def _saved(tmp_path) -> tuple[torch.nn.Module, Path]:
    model = create_model("cnn", n_filters=4)
    card = {"name": "cnn-deblur", "task_name": "deblur", "model": model.config, "task": {"task": "deblur"}}
    st, _ = save_trained(model, card, tmp_path / "cnn-deblur")
    return model, st


def test_save_and_load_round_trip(tmp_path):
    model, st = _saved(tmp_path)
    loaded, card = load_trained("cnn", "deblur", st)
    assert card["sha256"] == sha256_of(st) and card["bytes"] == st.stat().st_size
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # The card path and the folder work too.
    load_trained("cnn", "deblur", st.with_suffix(".json"))
    load_trained("cnn", "deblur", tmp_path)


def test_a_tampered_file_is_refused(tmp_path):
    _, st = _saved(tmp_path)
    blob = bytearray(st.read_bytes())
    blob[-1] ^= 0xFF
    st.write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match="does not match its card: sha256"):
        load_trained("cnn", "deblur", st)


def test_wrong_or_missing_cards_are_clear_errors(tmp_path):
    _, st = _saved(tmp_path)
    with pytest.raises(WeightsError, match="card for cnn-deblur, not resunet-deblur"):
        load_trained("resunet", "deblur", st)
    with pytest.raises(WeightsError, match="recon-train --model vit --task ct"):
        load_trained("vit", "ct", tmp_path / "nothing")
