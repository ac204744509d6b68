"""The recipes of the shipped weights: the exact `recon-train` options behind each `weights/<name>.json` card.

`RECIPES`: scripts/train_weights.sh runs them in this order on a 2-core CPU. `GPU_RECIPES`:
scripts/train_gpu.py runs them side by side on one GPU (the real-anatomy mix, candidates per name told apart
by a tag; the time budget is the script's). Each card records its command, and a test checks that it is one
of `recipes_for` its name. `python -m recon.training.recipes` prints the commands.
"""

from __future__ import annotations

import shlex

COMMON = [
    "--threads", "2", "--amp", "bf16", "--loss", "0.9*l1+0.1*ssim", "--crop", "128", "--batch-size", "8",
    "--pool", "512", "--steps-per-epoch", "200", "--heldout", "32", "--seed", "0",
]  # fmt: skip

# name -> (time budget in minutes, extra options)
RECIPES: dict[str, tuple[float, list[str]]] = {
    "resunet-deblur": (20, []),
    "resunet-ct": (15, []),
    "cnn-deblur": (12, ["--lr", "2e-3"]),
    "rescnn-deblur": (15, []),
    "vit-deblur": (40, ["--lr", "5e-4"]),
    "cnn-ct": (7, []),
}

# On one GPU (H200 class), four runs at once, each on 3 CPU threads: bigger batches and pool, the anatomy mix.
GPU_COMMON = [
    "--device", "auto", "--threads", "3", "--amp", "bf16", "--loss", "0.9*l1+0.1*ssim", "--crop", "128",
    "--batch-size", "32", "--pool", "1024", "--steps-per-epoch", "250", "--heldout", "32", "--seed", "0",
    "--anatomy", "anatomy",
]  # fmt: skip
# tag -> (name, extra options); the tags of one name are candidates, the script keeps the better one
GPU_RECIPES: dict[str, tuple[str, list[str]]] = {
    "resunet-ct-a50": (
        "resunet-ct",
        ["--anatomy-fraction", "0.5", "--anatomy-512", "36", "--anatomy-128", "64"],
    ),
    "resunet-ct-a75": (
        "resunet-ct",
        ["--anatomy-fraction", "0.75", "--anatomy-512", "36", "--anatomy-128", "64"],
    ),
    "cnn-ct-a50": ("cnn-ct", ["--anatomy-fraction", "0.5", "--anatomy-512", "36", "--anatomy-128", "64"]),
    "resunet-deblur-a30": ("resunet-deblur", ["--anatomy-fraction", "0.3"]),
}


def recipe_args(name: str) -> list[str]:
    """The CPU `recon-train` arguments of a checkpoint (scripts/train_weights.sh)."""
    if name not in RECIPES:
        raise ValueError(f"no recipe {name!r}; shipped: {', '.join(RECIPES)}")
    budget, extra = RECIPES[name]
    model, task = name.split("-", 1)
    return ["--model", model, "--task", task, "--time-budget", f"{budget:g}", "--out", f"runs/{name}",
            *COMMON, *extra]  # fmt: skip


def gpu_recipe_args(tag: str, budget: float) -> list[str]:
    """The `recon-train` arguments of one GPU run (scripts/train_gpu.py), ``budget`` minutes of training."""
    name, extra = GPU_RECIPES[tag]
    model, task = name.split("-", 1)
    return ["--model", model, "--task", task, "--time-budget", f"{budget:g}", "--out", f"runs/gpu/{tag}",
            *GPU_COMMON, *extra]  # fmt: skip


def recipes_for(name: str, gpu_budget: float | None = None) -> list[list[str]]:
    """Every recipe that may have made the shipped ``name``: the CPU one and, given the card's time budget,
    the GPU candidates."""
    found = [recipe_args(name)] if name in RECIPES else []
    if gpu_budget is not None:
        found += [gpu_recipe_args(tag, gpu_budget) for tag, (n, _) in GPU_RECIPES.items() if n == name]
    return found


if __name__ == "__main__":
    for name in RECIPES:
        print(shlex.join(["recon-train", *recipe_args(name)]))
    for tag in GPU_RECIPES:
        print(shlex.join(["recon-train", *gpu_recipe_args(tag, 3.5)]), f"  # GPU: {tag}")
