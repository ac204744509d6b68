"""recon-train, recon-eval, recon-simulate: the training-side command lines."""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path

import click
import numpy as np

from recon.runtime.cli.base import Command
from recon.training.task_options import task_config_from_options, task_options


def _hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name()
    return hw


# ----------------------------------------------------------------------------------------------- recon-train
@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--model", "model_name", help="cnn, rescnn, resunet, unet, vit")
@click.option(
    "--network",
    metavar="PACKAGE.MODULE:FACTORY",
    help="your own network instead of --model: FACTORY(**network args) → torch.nn.Module, (B,1,H,W) → "
    "(B,1,H,W) (docs/your-own-network.md)",
)
@click.option(
    "--network-arg", "network_arg", multiple=True, metavar="KEY=VALUE", help="FACTORY argument (repeatable)"
)
@click.option("--task", type=click.Choice(["deblur", "ct"]), required=True, help="The inverse problem.")
@task_options
@click.option(
    "--data", type=click.Path(exists=True, file_okay=False), help="DIR/{train,test}/<patient>/*.png etc."
)
@click.option("--epochs", type=int, default=10, help="epochs of --steps-per-epoch steps")
@click.option("--steps", type=int, help="total optimizer steps (overrides --epochs)")
@click.option("--steps-per-epoch", type=int, default=200, help="validation / checkpoint cadence")
@click.option("--batch-size", type=int, default=8, help="per process")
@click.option("--crop", type=int, default=128, help="training crop side")
@click.option("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, cosine schedule)")
@click.option("--loss", default="mse", help="mse, l1, ssim or a mix: '0.8*l1+0.2*ssim'")
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    default="auto",
    help="mixed precision (auto: bf16/fp16 on CUDA, off on CPU; bf16 also speeds up AVX512-BF16 CPUs)",
)
@click.option("--time-budget", type=float, help="minutes of training; stops gracefully, then evaluates")
@click.option("--pool", type=int, default=512, help="synthetic training images (half phantoms, half crops)")
@click.option("--model-opt", "model_opts", multiple=True, help="model hyperparameter KEY=VALUE (repeatable)")
@click.option("--heldout", "heldout_n", type=int, default=32, help="held-out images for the final evaluation")
@click.option("--seed", type=int, default=0, help="initialisation and data seed")
@click.option("--out", type=click.Path(file_okay=False), help="run folder [runs/<model>-<task>]")
@click.option("--resume", is_flag=True, help="continue from <out>/last.pt exactly")
@click.option("--threads", type=int, help="torch CPU threads")
@click.option("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
@click.option(
    "--anatomy",
    type=click.Path(exists=True, file_okay=False),
    help="real-anatomy slice stacks to mix into the pool (scripts/anatomy_slices.py)",
)
@click.option("--anatomy-fraction", type=click.FloatRange(0, 1), default=0.5, help="share of the pool")
@click.option(
    "--anatomy-512", "anatomy_512", type=int, default=0, help="CT: 512² slices added as 4 tiles each"
)
@click.option("--anatomy-128", "anatomy_128", type=int, default=0, help="CT: 2×2 mosaics of half-size slices")
@click.option("--json", "as_json", is_flag=True, help="Print the result (weights, held-out metrics) as JSON.")
def train_main(**kw):
    """Train a reconstruction network and write <out>/<model>-<task>.safetensors + .json card.

    \b
    Examples:
      recon-train --model resunet --task deblur --time-budget 20 --amp bf16
      recon-train --model cnn --task ct --steps 2000 --loss "0.8*l1+0.2*ssim"
      recon-train --model cnn --task ct --image-size 512 --views 180 --steps 500
      torchrun --nproc-per-node 2 -m recon.training.cli --model resunet --task deblur --steps 500
      recon-train --network monai.networks.nets:BasicUNet --network-arg spatial_dims=2 \
          --network-arg in_channels=1 --network-arg out_channels=1 --task ct --steps 200
    """
    import torch

    from recon.training import distributed

    if kw["threads"]:
        torch.set_num_threads(kw["threads"])
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID`: stop after this step and finish (weights, card)
        from recon.training.fit import request_stop

        signal.signal(signal.SIGUSR1, request_stop)
    task_cfg = task_config_from_options(kw["task"], kw)
    if (kw["model_name"] is None) == (kw["network"] is None):
        raise click.UsageError("give --model NAME (a registered family) or --network PACKAGE.MODULE:FACTORY")
    if kw["network_arg"] and kw["network"] is None:
        raise click.UsageError("--network-arg needs --network")
    if kw["network"] is not None:
        from recon.training.models.factory import network_name

        kw["model_name"] = network_name(kw["network"])
    out = Path(kw["out"] or f"runs/{kw['model_name']}-{kw['task']}")
    distributed.init_from_env()
    if kw["network"] is not None:
        model = _user_network(kw["network"], kw["network_arg"], kw["model_opts"], kw["seed"])
    else:
        model = _new_model(kw["model_name"], kw["model_opts"], kw["crop"], kw["seed"])
    run = _train(model, task_cfg, out, kw)
    if not distributed.is_main():
        distributed.cleanup()
        return
    _finish(run, task_cfg, out, kw)
    distributed.cleanup()


def _new_model(name: str, model_opts: tuple[str, ...], crop: int, seed: int):
    """The untrained network, started at the identity (each family knows how: `init_identity`)."""
    import torch

    from recon.training.fit import start_at_identity
    from recon.training.info import parse_overrides
    from recon.training.models import create_model, get_entry

    family = get_entry(name).cls
    defaults = family.training_overrides(crop) if hasattr(family, "training_overrides") else {}
    torch.manual_seed(seed)
    model = create_model(name, **{**defaults, **parse_overrides(model_opts, "--model-opt")})
    start_at_identity(model)
    return model


def _user_network(spec: str, network_args: tuple[str, ...], model_opts: tuple[str, ...], seed: int):
    """A user's network from its factory (training/models/factory.py), seeded, with `.config` set to the
    factory config the card records (so recon-export --network finds the arguments again)."""
    import torch

    from recon.training.info import parse_overrides
    from recon.training.models.factory import build_from_factory, factory_config

    if model_opts:
        raise click.UsageError("--model-opt sets a registered family's hyperparameters; use --network-arg")
    args = parse_overrides(network_args, "--network-arg")
    torch.manual_seed(seed)
    model = build_from_factory(spec, args)
    model.config = factory_config(spec, args)
    return model


def _train(model, task_cfg, out: Path, kw: dict) -> dict:
    """Data (pool, pairs, validation set) and the fit loop; returns what the card needs."""
    import torch

    from recon.training import data as data_mod
    from recon.training.fit import FitConfig, fit

    size, seed, data = task_cfg.image_size, kw["seed"], kw["data"]
    t0 = time.time()
    anatomy_record = None
    if kw["anatomy"]:
        from recon.training.anatomy import mixed_pool
        from recon.training.fit import auto_device

        device = auto_device() if kw["device"] == "auto" else kw["device"]
        clean, inputs, anatomy_record = mixed_pool(
            task_cfg, kw["pool"], size, seed, kw["anatomy"], kw["anatomy_fraction"], kw["anatomy_512"],
            kw["anatomy_128"], device=device, cache_dir=Path("runs/cache"),
        )  # fmt: skip
    else:
        clean, inputs = data_mod.training_pool(
            task_cfg, kw["pool"], size, seed, data, cache_dir=Path("runs/cache")
        )
    cfg = FitConfig(
        epochs=kw["epochs"],
        steps=kw["steps"],
        batch_size=kw["batch_size"],
        lr=kw["lr"],
        loss=kw["loss"],
        amp=kw["amp"],
        time_budget=kw["time_budget"],
        seed=seed,
        device=kw["device"],
    )
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    length = kw["steps_per_epoch"] * kw["batch_size"] * world
    train = data_mod.TrainingPairs(clean, task_cfg, kw["crop"], length, seed, inputs)
    valid = data_mod.validation_set(task_cfg, 8, size, seed, data)
    data_seconds = time.time() - t0
    result = fit(model, train, valid, cfg, out, resume=kw["resume"])
    return {"result": result, "fit": cfg, "world": world, "pool": len(clean), "data_seconds": data_seconds,
            "anatomy": anatomy_record}  # fmt: skip


def _finish(run: dict, task_cfg, out: Path, kw: dict) -> None:
    """Held-out evaluation, the weights and their card, one summary line."""
    import torch

    from recon.training import data as data_mod
    from recon.training.fit import evaluate
    from recon.training.weights import MAX_BYTES, save_trained

    name = f"{kw['model_name']}-{kw['task']}"
    # Contiguous FP32 on the CPU: the layout recon-eval rebuilds, so both evaluate with the same kernels.
    model = run["result"].model.cpu().to(memory_format=torch.contiguous_format).eval()
    heldout = evaluate(model, data_mod.heldout_set(task_cfg, kw["heldout_n"], task_cfg.image_size))
    card = _card(model, run, task_cfg, heldout, kw)
    st, card_path = save_trained(model, card, out / name)
    m, b = heldout["model"], heldout["baseline"]
    export = f"recon-export --model {kw['model_name']} --task {kw['task']} --weights {st}"
    if kw.get("as_json"):
        click.echo(json.dumps({"weights": str(st), "card": str(card_path),
                               "heldout": heldout, "export": export}, indent=1))  # fmt: skip
    else:
        click.echo(
            f"held-out ({heldout['n']} images): {kw['model_name']} PSNR {m['psnr']:.2f} dB SSIM "
            f"{m['ssim']:.4f} | baseline PSNR {b['psnr']:.2f} dB SSIM {b['ssim']:.4f} → {st} "
            f"({st.stat().st_size / 1e6:.1f} MB)"
        )
        click.echo(f"next: {export}   # export what was just trained")
    if st.stat().st_size > MAX_BYTES:
        click.echo(f"warning: {st} is larger than {MAX_BYTES >> 20} MB, too big to ship", err=True)


def _card(model, run: dict, task_cfg, heldout: dict, kw: dict) -> dict:
    """The weights' card: architecture, task, data recipe, training record, held-out metrics."""
    from recon.training import data as data_mod
    from recon.training.models import count_parameters

    data, result = kw["data"], run["result"]
    return {
        "name": f"{kw['model_name']}-{kw['task']}",
        "task_name": kw["task"],
        "model": model.config,
        "params": count_parameters(model),
        "task": task_cfg.to_json(),
        "data": {
            "source": f"folder {data}"
            if data
            else "synthetic phantoms + scikit-image crops"
            + (" + real anatomy slices" if run["anatomy"] else ""),
            "anatomy": run["anatomy"],
            "train_images": None if data else list(data_mod.TRAIN_IMAGES),
            "heldout_images": list(data_mod.HELDOUT_IMAGES),
            "pool": run["pool"],
            "image_size": task_cfg.image_size,
            "crop": kw["crop"],
            "seed": kw["seed"],
            "augment": "random crops, dihedral (8), random rotations; deblur: fresh noise per sample",
        },
        "training": {
            "fit": {**vars(run["fit"]), "steps_per_epoch": kw["steps_per_epoch"]},
            "steps": result.steps,
            "world_size": run["world"],
            "train_seconds": round(result.train_seconds, 1),
            "data_seconds": round(run["data_seconds"], 1),
            "best_validation": result.best,
            "hardware": _hardware(),
            "command": shlex.join(["recon-train", *sys.argv[1:]]),
        },
        "metrics": {"heldout": heldout},
    }


# ------------------------------------------------------------------------------------------------ recon-eval
@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", required=True, help="cnn, rescnn, resunet, unet, vit")
@click.option("--task", type=click.Choice(["deblur", "ct"]), required=True, help="The inverse problem.")
@click.option("--weights", type=click.Path(exists=True), help="a .safetensors/.json pair [shipped weights]")
@task_options
@click.option("--heldout", "heldout_n", type=click.IntRange(min=2), help="held-out images [the card's count]")
@click.option(
    "--set",
    "set_name",
    type=click.Choice(["heldout", "real-ct", "real-mr", "anatomy-heldout"]),
    default="heldout",
    help="evaluation set (recon.training.eval_sets); real sets: native size unless --image-size",
)
@click.option("--anatomy", default="anatomy", help="folder of scripts/anatomy_slices.py (anatomy-heldout)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--threads", type=int, help="torch CPU threads [torch's default]")
def eval_main(model_name, task, weights, heldout_n, set_name, anatomy, as_json, threads, **kw):
    """PSNR / SSIM / RE of a trained model and of the no-learning baseline (blurred input or FBP) on the fixed
    held-out set, next to the numbers its card claims. The task options evaluate it at another geometry
    (the held-out set is then simulated there; the card's numbers are for its own geometry).

    \b
    Examples:
      recon-eval --model resunet --task deblur
      recon-eval --model cnn --task ct --weights runs/cnn-ct/cnn-ct.safetensors --json
      recon-eval --model cnn --task ct --image-size 512 --views 180 --heldout 8
    """
    import torch

    from recon.training.data import heldout_set
    from recon.training.fit import evaluate
    from recon.training.tasks import build_physics, task_config_from_json
    from recon.training.weights import load_trained

    if threads:
        torch.set_num_threads(threads)
    model, card = load_trained(model_name, task, weights)
    if "task" not in card:
        raise click.ClickException(f"the weights card of {model_name}-{task} records no task configuration")
    trained = task_config_from_json(card["task"])
    size = kw.get("image_size")  # per-slice sets: None keeps each slice's native size
    task_cfg = task_config_from_options(task, kw, base=trained)
    if set_name != "heldout":
        from recon.training.eval_sets import report_slices

        click.echo(report_slices(model, model_name, task_cfg, set_name, size, anatomy, as_json))
        return
    claimed = card.get("metrics", {}).get("heldout", {}) if task_cfg == trained else {}
    n = heldout_n or claimed.get("n", 32)
    size = claimed.get("size", [task_cfg.image_size])[0]  # the card's, unless options changed the task
    result = evaluate(model, heldout_set(task_cfg, n, size))
    result["card"] = {k: claimed.get(k) for k in ("model", "baseline")}
    if task_cfg != trained:
        result["task"] = task_cfg.to_json()
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{model_name}-{task}: held-out set of {result['n']} images, {size}×{size}")
    click.echo(f"{'':13} {'PSNR dB':>8} {'SSIM':>7} {'RE':>7}   card PSNR")
    for key in ("model", "baseline"):
        r, c = result[key], (claimed.get(key) or {})
        label = model_name if key == "model" else build_physics(task_cfg).network_input_name
        card_psnr = f"{c['psnr']:.2f}" if "psnr" in c else "-"
        click.echo(f"{label:13} {r['psnr']:8.2f} {r['ssim']:7.4f} {r['re']:7.4f}   {card_psnr}")


# -------------------------------------------------------------------------------------------- recon-simulate
@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--task", type=click.Choice(["deblur", "ct"]), required=True, help="The inverse problem.")
@task_options
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option(
    "--phantoms", "--n-phantoms", "n_phantoms", type=int, default=0, help="add K training-style phantoms"
)
@click.option(
    "--heldout", "n_heldout", type=int, default=0, help="add the first K images of the held-out set"
)
@click.option("--seed", type=int, default=0, help="noise seed (and phantom seed)")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["npy", "tif", "png"]),
    default="npy",
    show_default=True,
    help="One file format for measurements and targets: npy and tif keep float32 exactly; png is 16-bit, "
    "clipped to [0, 1] (deblur only: a sinogram is not an image in [0, 1]).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def simulate_main(task, inputs, out, n_phantoms, n_heldout, seed, file_format, as_json, **kw):
    """Degrade clean images into measurements the runtime can reconstruct, with their ground truth.

    Writes OUT/measurements/<name>.<format> (deblur: blurred images; ct: float32 sinograms,
    n_views × n_detectors), OUT/targets/<name>.<format> and OUT/simulate.json (the task config). One
    file per image, so `recon-run ARTIFACT OUT/measurements` runs each image once.

    \b
    Examples:
      recon-simulate --task deblur photo.png scan.dcm --out demo-in
      recon-simulate --task ct --heldout 8 --out ct-in
      recon-simulate --task ct --image-size 512 --views 180 --heldout 2 --out ct512-in
    """
    if not inputs and not n_phantoms and not n_heldout:
        raise click.UsageError("give INPUTS, --phantoms K or --heldout K")
    if task == "ct" and file_format == "png":
        raise click.UsageError("--format png is for deblur; a sinogram takes npy or tif (float32)")
    cfg = task_config_from_options(task, kw)
    names, images = _clean_inputs(cfg, inputs, n_phantoms, n_heldout, seed)
    out = Path(out)
    _write_measurements(cfg, names, images, out, seed, file_format)
    written = {"task": cfg.to_json(), "files": names, "seed": seed, "format": file_format}
    (out / "simulate.json").write_text(json.dumps(written, indent=1))
    if as_json:
        click.echo(json.dumps({"out": str(out), **written}, indent=1))
        return
    click.echo(f"wrote {len(names)} {task} measurement(s) and targets ({file_format}) to {out}")


def _clean_inputs(cfg, inputs, n_phantoms: int, n_heldout: int, seed: int) -> tuple[list[str], list]:
    """(names, clean images as 2-D tensors): the given files, then phantoms, then held-out images."""
    import torch

    from recon.training import data as data_mod

    size = cfg.image_size
    names, images = [], []
    for path in inputs:
        names.append(Path(path).stem)
        # Deblur keeps the image's own size; CT needs the geometry's.
        images.append(torch.from_numpy(data_mod.load_image(path, size if cfg.task == "ct" else None)))
    if n_phantoms:
        clean = data_mod.clean_images(data_mod._TRAIN, 10_000 + seed, n_phantoms, size, ())
        names += [f"phantom{i:03d}" for i in range(n_phantoms)]
        images += list(clean[:, 0])
    if n_heldout:
        clean = data_mod.heldout_set(cfg, max(n_heldout, 2), size).targets[:n_heldout]
        names += [f"heldout{i:03d}" for i in range(n_heldout)]
        images += list(clean[:, 0])
    return names, images


def _write_array(path: Path, array: np.ndarray, file_format: str) -> None:
    import tifffile
    from PIL import Image

    if file_format == "npy":
        np.save(path.with_suffix(".npy"), array.astype(np.float32))
    elif file_format == "tif":
        tifffile.imwrite(path.with_suffix(".tif"), array.astype(np.float32))
    else:
        pixels = (np.clip(array, 0, 1) * 65535).round().astype(np.uint16)
        Image.fromarray(pixels).save(path.with_suffix(".png"))


def _write_measurements(
    cfg, names: list[str], images: list, out: Path, seed: int, file_format: str = "npy"
) -> None:
    import torch

    from recon.training import tasks

    physics = tasks.build_physics(cfg)
    gen = torch.Generator().manual_seed(seed)
    for sub in ("measurements", "targets"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images, strict=True):
        y = (
            tasks.simulate(img[None, None].float(), cfg, gen, physics=physics)[0, 0]
            .numpy()
            .astype(np.float32)
        )
        _write_array(out / "measurements" / name, y, file_format)
        _write_array(out / "targets" / name, img.numpy(), file_format)


if __name__ == "__main__":  # `python -m recon.training.cli` (e.g. under torchrun) trains
    train_main()
