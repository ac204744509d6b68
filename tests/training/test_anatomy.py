"""Real anatomy in the training pool and the per-slice evaluation sets (tiny stacks written here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from recon.training import anatomy, data, eval_sets
from recon.training.tasks import task_config

ROOT = Path(__file__).resolve().parents[2]


def _stack(folder: Path, name: str, n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    slices = np.stack([data.phantom(size, rng) for _ in range(n)])
    stored = np.round(slices * 65535).astype(np.uint16)
    np.savez_compressed(folder / name, slices=stored)
    return stored.astype(np.float32) / 65535


def test_tiles_cut_an_image_into_its_quarters_row_by_row():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    quarters = anatomy.tiles(image, 2)
    assert quarters.shape == (4, 1, 2, 2)
    assert torch.equal(quarters[1, 0], image[0, 0, :2, 2:]) and torch.equal(
        quarters[2, 0], image[0, 0, 2:, :2]
    )


def test_a_mosaic_is_undone_by_tiles():
    small = torch.rand(8, 1, 4, 4)
    assert anatomy.mosaic(small).shape == (2, 1, 8, 8)
    assert torch.equal(anatomy.tiles(anatomy.mosaic(small), 4), small)


def test_a_repeated_slice_comes_back_under_another_dihedral_map():
    stack = torch.rand(2, 1, 8, 8)
    out = anatomy.cycle(stack, 5)
    assert torch.equal(out[0], stack[0]) and torch.equal(out[1], stack[1])
    assert torch.equal(out[2], torch.rot90(stack[0], 1, dims=(-2, -1))) and not torch.equal(out[2], stack[0])


def test_the_pool_mixes_the_anatomy_fraction_and_tiles_of_the_finer_ct_geometry(tmp_path):
    train32 = _stack(tmp_path, "train32.npz", 3, 32, 0)
    train64 = _stack(tmp_path, "train64.npz", 2, 64, 1)
    cfg = task_config("ct", image_size=32, n_views=12)
    clean, inputs, record = anatomy.mixed_pool(cfg, 8, 32, 0, tmp_path, 0.5, n_512=1, n_128=1)
    assert clean.shape == inputs.shape == (8 + 4 + 1, 1, 32, 32)
    # the synthetic half is exactly the usual pool's start; the anatomy half the stack in turn
    assert torch.equal(clean[:4], data.clean_images(data._TRAIN, 0, 4, 32, data.TRAIN_IMAGES))
    assert torch.allclose(clean[4:7, 0], torch.from_numpy(train32))
    assert record["anatomy_images"] == 4 and record["synthetic_images"] == 4
    # the tiles' inputs are the FBP of the 64² geometry (finer streaks), cut like their targets
    big = data.simulate_pairs(
        torch.from_numpy(train64[:1])[:, None], cfg.with_overrides(image_size=64), 3000, 4
    )
    assert torch.allclose(inputs[8:12], anatomy.tiles(big.inputs, 32), atol=1e-5)
    assert torch.allclose(clean[8:12], anatomy.tiles(torch.from_numpy(train64[:1])[:, None], 32))
    # the mosaic's quarters: half-size slices simulated in the 16² geometry
    quarters = anatomy.tiles(clean[12:], 16)
    small = data.simulate_pairs(quarters, cfg.with_overrides(image_size=16), 4000)
    assert torch.allclose(anatomy.tiles(inputs[12:], 16), small.inputs, atol=1e-5)
    with pytest.raises(ValueError, match="CT only"):
        anatomy.mixed_pool(task_config("deblur"), 8, 32, 0, tmp_path, 0.5, n_512=1)


def test_the_anatomy_split_is_by_subject():
    spec = importlib.util.spec_from_file_location("anatomy_slices", ROOT / "scripts" / "anatomy_slices.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    train = {v[0] for v in script.TRAIN_VOLUMES + script.TRAIN_SLICES_2D + script.TRAIN_RAW_2D}
    train_files = {Path(str(v[1])).name for v in script.TRAIN_VOLUMES + script.TRAIN_SLICES_2D}
    heldout = {v[0] for v in script.HELDOUT_VOLUMES}
    assert train and heldout and not train & heldout
    assert not train_files & {Path(str(v[1])).name.split(":")[-1] for v in script.HELDOUT_VOLUMES}


class _Identity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def test_an_identity_network_gains_nothing_and_each_slice_keeps_its_geometry():
    rng = np.random.default_rng(0)
    images = [("a", data.phantom(32, rng)), ("b", data.phantom(48, rng))]
    result = eval_sets.evaluate_slices(_Identity(), task_config("ct", image_size=32, n_views=12), images)
    assert [r["size"] for r in result["slices"]] == [[32, 32], [48, 48]]
    assert all(r["gain_db"] == 0 for r in result["slices"])
    assert result["baseline"]["psnr"] < 40  # the FBP of 12 views is far from the slice


def test_a_ct_slice_without_a_header_window_is_read_through_the_soft_tissue_window():
    img = eval_sets.real_slice("CT_small.dcm")  # ships with pydicom itself; its header has no window
    assert img.shape == (128, 128) and img.min() >= 0 and img.max() <= 1
    # the stored range (±32768) would squeeze the anatomy into ~1% of [0, 1]
    assert img.std() > 0.15 and ((img > 0) & (img < 1)).mean() > 0.3


def test_recon_eval_set_prints_one_row_per_slice(tmp_path):
    from recon.training.cli import eval_main

    _stack(tmp_path, "heldout256.npz", 2, 256, 2)
    args = [
        "--model",
        "cnn",
        "--task",
        "ct",
        "--set",
        "anatomy-heldout",
        "--anatomy",
        str(tmp_path),
        "--json",
    ]
    result = CliRunner().invoke(eval_main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 2 and [r["slice"] for r in report["slices"]] == [
        "heldout256.npz[0]",
        "heldout256.npz[1]",
    ]
    assert report["gain_db"]["min"] > 0  # the shipped CT CNN beats FBP on phantoms
