"""recon-train / recon-eval / recon-simulate on tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from recon.training.cli import eval_main, simulate_main, train_main
from recon.training.data import heldout_set
from recon.training.fit import evaluate
from recon.training.models import create_model
from recon.training.tasks import task_config
from recon.training.weights import save_trained


def test_recon_eval_reproduces_the_card(tmp_path):
    cfg = task_config("deblur")
    model = create_model("cnn", n_filters=4).eval()
    card = {
        "name": "cnn-deblur",
        "task_name": "deblur",
        "model": model.config,
        "task": cfg.to_json(),
        "metrics": {"heldout": evaluate(model, heldout_set(cfg, 4, 64))},
    }
    st, _ = save_trained(model, card, tmp_path / "cnn-deblur")
    result = CliRunner().invoke(
        eval_main, ["--model", "cnn", "--task", "deblur", "--weights", str(st), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["n"] == 4 and out["size"] == [64, 64]
    assert out["model"]["psnr"] == pytest.approx(card["metrics"]["heldout"]["model"]["psnr"], abs=1e-6)
    assert out["baseline"]["psnr"] < 40
    text = CliRunner().invoke(eval_main, ["--model", "cnn", "--task", "deblur", "--weights", str(st)])
    assert text.exit_code == 0 and "blurred" in text.output


def test_recon_eval_user_error_is_one_line(tmp_path):
    result = CliRunner().invoke(eval_main, ["--model", "cnn", "--task", "ct", "--weights", str(tmp_path)])
    assert result.exit_code != 0 and "error: no given weights card" in result.output
    assert "Traceback" not in result.output


def test_recon_train_writes_weights_and_card(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "--model",
        "cnn",
        "--task",
        "deblur",
        "--steps",
        "3",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "2",
        "--crop",
        "32",
        "--pool",
        "4",
        "--heldout",
        "2",
        "--model-opt",
        "n_filters=4",
        "--out",
        "run",
    ]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run" / "cnn-deblur.json").read_text())
    assert card["model"]["n_filters"] == 4 and card["training"]["steps"] == 3
    assert card["metrics"]["heldout"]["n"] == 2 and "baseline" in card["metrics"]["heldout"]


def test_recon_train_on_a_course_layout_folder(tmp_path, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / "data" / split / "p1").mkdir(parents=True)
        for k in range(2):
            img = (rng.random((80, 80)) * 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / split / "p1" / f"{k}.png")
    monkeypatch.chdir(tmp_path)
    args = [
        "--model",
        "cnn",
        "--task",
        "deblur",
        "--data",
        "data",
        "--steps",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--crop",
        "32",
        "--heldout",
        "2",
        "--model-opt",
        "n_filters=4",
        "--out",
        "run",
    ]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run" / "cnn-deblur.json").read_text())
    assert card["data"]["source"] == "folder data" and card["data"]["pool"] == 2


def test_recon_simulate_deblur_and_ct(tmp_path):
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).save(
        tmp_path / "x.png"
    )
    out = tmp_path / "deblur"
    r = CliRunner().invoke(
        simulate_main, ["--task", "deblur", str(tmp_path / "x.png"), "--phantoms", "1", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert np.load(out / "measurements" / "x.npy").shape == (40, 50)
    # one file per image: recon-run on the folder runs each image once
    assert sorted(p.name for p in (out / "measurements").iterdir()) == ["phantom000.npy", "x.npy"]
    assert sorted(p.name for p in (out / "targets").iterdir()) == ["phantom000.npy", "x.npy"]
    out = tmp_path / "ct"
    r = CliRunner().invoke(
        simulate_main, ["--task", "ct", "--phantoms", "1", "--format", "tif", "--json", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["format"] == "tif"
    cfg = task_config("ct")
    assert [p.name for p in (out / "measurements").iterdir()] == ["phantom000.tif"]
    assert tifffile.imread(out / "measurements" / "phantom000.tif").shape == (cfg.n_views, cfg.n_detectors)
    png = ["--task", "ct", "--phantoms", "1", "--format", "png", "--out", str(tmp_path / "p")]
    assert CliRunner().invoke(simulate_main, png).exit_code != 0
    assert CliRunner().invoke(simulate_main, ["--task", "ct", "--out", str(out)]).exit_code != 0


def test_recon_simulate_takes_the_scanner_geometry_from_the_shared_task_options(tmp_path):
    out = tmp_path / "ct"
    args = [
        "--task",
        "ct",
        "--image-size",
        "48",
        "--views",
        "30",
        "--detector-spacing",
        "2",
        "--phantoms",
        "1",
    ]
    r = CliRunner().invoke(simulate_main, [*args, "--task-option", "filter=hann", "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = json.loads((out / "simulate.json").read_text())["task"]
    assert (written["n_views"], written["n_detectors"], written["filter"]) == (
        30,
        34,
        "hann",
    )  # ceil(√2·48/2)
    assert np.load(out / "measurements" / "phantom000.npy").shape == (30, 34)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "deblur", "--views", "30"], "--views apply to --task ct only"),
        (["--task", "ct", "--views", "0"], "0 is not in the range x>=1"),
        (["--task", "ct", "--task-option", "filter=box"], "filter must be one of"),
        (["--task", "ct", "--task-option", "kernel_size=3"], "unknown ct option"),
    ],
)
def test_a_bad_task_option_is_one_line_naming_it(tmp_path, args, message):
    r = CliRunner().invoke(simulate_main, [*args, "--phantoms", "1", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
