"""recon-train, recon-eval, recon-simulate: the training-side command lines."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import click
import numpy as np

_USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err).strip("'\"")) from None


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
@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--model", "model_name", required=True, help="cnn, rescnn, resunet, unet, vit")
@click.option("--task", type=click.Choice(["deblur", "ct"]), required=True)
@click.option(
    "--data", type=click.Path(exists=True, file_okay=False), help="DIR/{train,test}/<patient>/*.png etc."
)
@click.option("--epochs", type=int, default=10)
@click.option("--steps", type=int, help="total optimizer steps (overrides --epochs)")
@click.option("--steps-per-epoch", type=int, default=200, help="validation / checkpoint cadence")
@click.option("--batch-size", type=int, default=8, help="per process")
@click.option("--crop", type=int, default=128, help="training crop side")
@click.option("--lr", type=float, default=1e-3)
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
@click.option("--seed", type=int, default=0)
@click.option("--out", type=click.Path(file_okay=False), help="run folder [runs/<model>-<task>]")
@click.option("--resume", is_flag=True, help="continue from <out>/last.pt exactly")
@click.option("--threads", type=int, help="torch CPU threads")
def train_main(
    model_name,
    task,
    data,
    epochs,
    steps,
    steps_per_epoch,
    batch_size,
    crop,
    lr,
    loss,
    amp,
    time_budget,
    pool,
    model_opts,
    heldout_n,
    seed,
    out,
    resume,
    threads,
):
    """Train a reconstruction network and write <out>/<model>-<task>.safetensors + .json card.

    \b
    Examples:
      recon-train --model resunet --task deblur --time-budget 20 --amp bf16
      recon-train --model cnn --task ct --steps 2000 --loss "0.8*l1+0.2*ssim"
      torchrun --nproc-per-node 2 -m recon.training.cli --model resunet --task deblur --steps 500
    """
    import torch

    from recon.training import data as data_mod
    from recon.training import distributed, tasks
    from recon.training.fit import FitConfig, evaluate, fit, start_at_identity
    from recon.training.info import parse_overrides
    from recon.training.models import count_parameters, create_model
    from recon.training.weights import MAX_BYTES, save_trained

    if threads:
        torch.set_num_threads(threads)
    try:
        distributed.init_from_env()
        task_cfg = tasks.task_config(task)
        size = int(task_cfg.get("image_size", 256))
        overrides = parse_overrides(model_opts, "--model-opt")
        if model_name == "vit":
            overrides.setdefault("image_size", crop)  # learned positions for the training crop
        torch.manual_seed(seed)
        model = create_model(model_name, **overrides)
        start_at_identity(model)
        out = Path(out or f"runs/{model_name}-{task}")
        t0 = time.time()
        clean, inputs = data_mod.training_pool(task_cfg, pool, size, seed, data, cache_dir=Path("runs/cache"))
        cfg = FitConfig(
            epochs=epochs,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            loss=loss,
            amp=amp,
            time_budget=time_budget,
            seed=seed,
        )
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        train = data_mod.TrainingPairs(
            clean, task_cfg, crop, steps_per_epoch * batch_size * world, seed, inputs
        )
        valid = data_mod.validation_set(task_cfg, 8, size, seed, data)
        data_seconds = time.time() - t0
        result = fit(model, train, valid, cfg, out, resume=resume)
    except _USER_ERRORS as err:
        _fail(err)
    if not distributed.is_main():
        distributed.cleanup()
        return
    # Contiguous FP32 on the CPU: the layout recon-eval rebuilds, so both evaluate with the same kernels.
    model = result.model.cpu().to(memory_format=torch.contiguous_format).eval()
    heldout = evaluate(model, data_mod.heldout_set(task_cfg, heldout_n, size))
    card = {
        "name": f"{model_name}-{task}",
        "task_name": task,
        "model": model.config,
        "params": count_parameters(model),
        "task": task_cfg,
        "data": {
            "source": f"folder {data}" if data else "synthetic phantoms + scikit-image crops",
            "train_images": None if data else list(data_mod.TRAIN_IMAGES),
            "heldout_images": list(data_mod.HELDOUT_IMAGES),
            "pool": len(clean),
            "image_size": size,
            "crop": crop,
            "seed": seed,
            "augment": "random crops, dihedral (8), random rotations; deblur: fresh noise per sample",
        },
        "training": {
            "fit": {**vars(cfg), "steps_per_epoch": steps_per_epoch},
            "steps": result.steps,
            "world_size": world,
            "train_seconds": round(result.train_seconds, 1),
            "data_seconds": round(data_seconds, 1),
            "best_validation": result.best,
            "hardware": _hardware(),
            "command": shlex.join(["recon-train", *sys.argv[1:]]),
        },
        "metrics": {"heldout": heldout},
    }
    st, card_path = save_trained(model, card, out / f"{model_name}-{task}")
    m, b = heldout["model"], heldout["baseline"]
    click.echo(
        f"held-out ({heldout['n']} images): {model_name} PSNR {m['psnr']:.2f} dB SSIM {m['ssim']:.4f} "
        f"| baseline PSNR {b['psnr']:.2f} dB SSIM {b['ssim']:.4f} → {st} ({st.stat().st_size / 1e6:.1f} MB)"
    )
    if st.stat().st_size > MAX_BYTES:
        click.echo(f"warning: {st} is larger than {MAX_BYTES >> 20} MB, too big to ship", err=True)
    distributed.cleanup()


# ------------------------------------------------------------------------------------------------ recon-eval
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", required=True)
@click.option("--task", type=click.Choice(["deblur", "ct"]), required=True)
@click.option("--weights", type=click.Path(exists=True), help="a .safetensors/.json pair [shipped weights]")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--threads", type=int)
def eval_main(model_name, task, weights, as_json, threads):
    """PSNR / SSIM / RE of a trained model and of the no-learning baseline (blurred input or FBP) on the fixed
    held-out set, next to the numbers its card claims.

    \b
    Examples:
      recon-eval --model resunet --task deblur
      recon-eval --model cnn --task ct --weights runs/cnn-ct/cnn-ct.safetensors --json
    """
    import torch

    from recon.training.data import heldout_set
    from recon.training.fit import evaluate
    from recon.training.weights import load_trained

    if threads:
        torch.set_num_threads(threads)
    try:
        model, card = load_trained(model_name, task, weights)
        claimed = card.get("metrics", {}).get("heldout", {})
        n, size = claimed.get("n", 32), claimed.get("size", [256, 256])[0]
        result = evaluate(model, heldout_set(card["task"], n, size))
    except _USER_ERRORS as err:
        _fail(err)
    result["card"] = {k: claimed.get(k) for k in ("model", "baseline")}
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{model_name}-{task}: held-out set of {result['n']} images, {size}×{size}")
    click.echo(f"{'':10} {'PSNR dB':>8} {'SSIM':>7} {'RE':>7}   card PSNR")
    for key in ("model", "baseline"):
        r, c = result[key], (claimed.get(key) or {})
        label = model_name if key == "model" else ("FBP" if task == "ct" else "blurred")
        card_psnr = f"{c['psnr']:.2f}" if "psnr" in c else "-"
        click.echo(f"{label:10} {r['psnr']:8.2f} {r['ssim']:7.4f} {r['re']:7.4f}   {card_psnr}")


# -------------------------------------------------------------------------------------------- recon-simulate
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--task", type=click.Choice(["deblur", "ct"]), required=True)
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option(
    "--phantoms", "--n-phantoms", "n_phantoms", type=int, default=0, help="add K training-style phantoms"
)
@click.option(
    "--heldout", "n_heldout", type=int, default=0, help="add the first K images of the held-out set"
)
@click.option("--seed", type=int, default=0, help="noise seed (and phantom seed)")
def simulate_main(task, inputs, out, n_phantoms, n_heldout, seed):
    """Degrade clean images into measurements the runtime can reconstruct, with their ground truth.

    Writes OUT/measurements/<name>.{png,npy} (deblur: blurred images) or .{npy,tif} (ct: float32 sinograms,
    n_angles × n_detectors), OUT/targets/<name>.{png,npy} and OUT/simulate.json (the task config).

    \b
    Examples:
      recon-simulate --task deblur photo.png scan.dcm --out demo-in
      recon-simulate --task ct --heldout 8 --out ct-in
    """
    import tifffile
    import torch
    from PIL import Image

    from recon.training import data as data_mod
    from recon.training import tasks

    if not inputs and not n_phantoms and not n_heldout:
        raise click.UsageError("give INPUTS, --phantoms K or --heldout K")
    try:
        cfg = tasks.task_config(task)
        size = int(cfg.get("image_size", 256))
        names, images = [], []
        for path in inputs:
            names.append(Path(path).stem)
            # Deblur keeps the image's own size; CT needs the geometry's.
            images.append(torch.from_numpy(data_mod.load_image(path, size if task == "ct" else None)))
        if n_phantoms:
            clean = data_mod.clean_images(data_mod._TRAIN, 10_000 + seed, n_phantoms, size, ())
            names += [f"phantom{i:03d}" for i in range(n_phantoms)]
            images += list(clean[:, 0])
        if n_heldout:
            clean = data_mod.heldout_set(cfg, max(n_heldout, 2), size).targets[:n_heldout]
            names += [f"heldout{i:03d}" for i in range(n_heldout)]
            images += list(clean[:, 0])
        physics = tasks.build_physics(cfg)
        gen = torch.Generator().manual_seed(seed)
        out = Path(out)
        for sub in ("measurements", "targets"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        for name, img in zip(names, images, strict=True):
            y = (
                tasks.simulate(img[None, None].float(), cfg, gen, physics=physics)[0, 0]
                .numpy()
                .astype(np.float32)
            )
            np.save(out / "measurements" / f"{name}.npy", y)
            if task == "ct":
                tifffile.imwrite(out / "measurements" / f"{name}.tif", y)
            else:
                Image.fromarray((np.clip(y, 0, 1) * 65535).round().astype(np.uint16)).save(
                    out / "measurements" / f"{name}.png"
                )
            np.save(out / "targets" / f"{name}.npy", img.numpy())
            Image.fromarray((img.numpy() * 65535).round().astype(np.uint16)).save(
                out / "targets" / f"{name}.png"
            )
        (out / "simulate.json").write_text(json.dumps({"task": cfg, "files": names, "seed": seed}, indent=1))
    except _USER_ERRORS as err:
        _fail(err)
    click.echo(f"wrote {len(names)} {task} measurement(s) and targets to {out}")


if __name__ == "__main__":  # `python -m recon.training.cli` (e.g. under torchrun) trains
    train_main()
