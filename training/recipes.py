"""The recipes of the shipped weights: the exact `recon-train` options behind each `weights/<name>.json` card.

scripts/train_weights.sh runs them in this order on a 2-core CPU; each card records its command, and a test
checks the two agree. `python -m recon.training.recipes` prints the commands.
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


def recipe_args(name: str) -> list[str]:
    """The `recon-train` arguments of a shipped checkpoint (what its card's ``training.command`` records)."""
    if name not in RECIPES:
        raise ValueError(f"no recipe {name!r}; shipped: {', '.join(RECIPES)}")
    budget, extra = RECIPES[name]
    model, task = name.split("-", 1)
    return ["--model", model, "--task", task, "--time-budget", f"{budget:g}", "--out", f"runs/{name}",
            *COMMON, *extra]  # fmt: skip


if __name__ == "__main__":
    for name in RECIPES:
        print(shlex.join(["recon-train", *recipe_args(name)]))
