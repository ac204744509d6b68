"""Images of any size, measured: quality at 512² and 384×640, tiled vs whole agreement, the ViT through tiles.

With the exported artifacts of the shipped weights (runtime only; the held-out images come from
recon.training, which the runtime never imports, hence a script here):
  - the ResUNet's held-out PSNR gain (model − blurred input) at 256² (the weight card's setting), 512² and
    384×640, whole-image inference;
  - on the same larger images, the gain of 256² crops run one by one at the training size against the
    whole-image output on the same crops: what running at another size costs, content held fixed (the
    larger held-out images are easier, so their gain differs from the 256² set's for reasons of content);
  - tiled inference (tiles forced smaller than the image) against whole-image inference, PSNR between them;
  - the ViT at 512² through tiling (its graph takes 256² only), and its 256² gain for reference;
  - a figure: whole | tiled | |difference| × gain, on one 512² held-out image.

    python bench/anysize.py --resunet /tmp/anysize/art/resunet --vit /tmp/anysize/art/vit \
        [--n 32] [--tile 256] [--threads 2] [--figure docs/figures/anysize-tiling.png] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.profiling import cpu_description


def psnr(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image PSNR (peak 1) after clipping the estimate to [0, 1], as recon.training.metrics.psnr."""
    diff = np.clip(estimate, 0, 1).astype(np.float64) - target
    mse = np.maximum((diff**2).reshape(len(diff), -1).mean(1), 1e-12)
    return 10 * np.log10(1.0 / mse)


def agreement_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of b against a over the whole set (peak 1)."""
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def heldout(task_cfg: dict, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, clean) (n, H, W) float32: the training package's held-out recipe at another size.

    Square sizes are `heldout_set` itself; H × W crops the top of a W × W held-out clean image before the
    blur is simulated (so the measurement is a real H × W acquisition, not a crop of a larger one).
    """
    from recon.training.data import _HELDOUT, HELDOUT_IMAGES, clean_images, heldout_set, simulate_pairs

    if height == width:
        pairs = heldout_set(task_cfg, n=n, size=height)
    else:
        side = max(height, width)
        clean = clean_images(_HELDOUT, 0, n, side, HELDOUT_IMAGES)[..., :height, :width].contiguous()
        pairs = simulate_pairs(clean, task_cfg, seed=20_261_125)
    return pairs.measurements.numpy()[:, 0], pairs.targets.numpy()[:, 0]


def run_all(reconstructor: Any, images: np.ndarray, chunk: int = 4) -> tuple[np.ndarray, float]:
    """Outputs for every image (in chunks, to bound memory) and seconds per image."""
    start = time.perf_counter()
    out = np.concatenate([reconstructor.run(images[i : i + chunk]) for i in range(0, len(images), chunk)])
    return out, (time.perf_counter() - start) / len(images)


def gain_row(name: str, out: np.ndarray, blurred: np.ndarray, clean: np.ndarray, s_per_image: float) -> dict:
    model, baseline = psnr(out, clean), psnr(blurred, clean)
    return {
        "setting": name,
        "images": len(clean),
        "size": list(clean.shape[1:]),
        "psnr_model": float(model.mean()),
        "psnr_blurred": float(baseline.mean()),
        "gain_db": float((model - baseline).mean()),
        "s_per_image": s_per_image,
    }


def crop_comparison(
    reconstructor: Any, task_cfg: Any, blurred: np.ndarray, clean: np.ndarray, whole: np.ndarray
) -> dict:
    """Gain on the non-overlapping 256² crops of each clean image: each crop acquired (simulated) and run as a
    256² image, against the whole-image output on the same pixels.

    The crops are simulated anew rather than cut from the larger measurement: a cut has no zero-padded blur
    at its borders, which the forward model (and so the network) has at every image border; a cut-out crop
    drops the gain by ~10 dB for that reason alone (checked on 2 images: 29.8 vs 40.2 dB).
    """
    import torch

    from recon.training.data import simulate_pairs

    height, width = clean.shape[1:]
    corners = [(r, c) for r in range(0, height - 255, 256) for c in range(0, width - 255, 256)]

    def crops(images: np.ndarray) -> np.ndarray:
        return np.concatenate([images[:, r : r + 256, c : c + 256] for r, c in corners])

    target = crops(clean)
    pairs = simulate_pairs(torch.from_numpy(np.ascontiguousarray(target[:, None])), task_cfg, seed=20_261_126)
    measured = pairs.measurements.numpy()[:, 0]
    alone, _ = run_all(reconstructor, measured)
    gain_alone = float((psnr(alone, target) - psnr(measured, target)).mean())
    gain_whole = float((psnr(crops(whole), target) - psnr(crops(blurred), target)).mean())
    return {
        "crops": len(target),
        "gain_crops_alone_db": gain_alone,
        "gain_whole_on_crops_db": gain_whole,
        "whole_minus_alone_db": gain_whole - gain_alone,
    }


def figure(path: Path, blurred: np.ndarray, whole: np.ndarray, tiled: np.ndarray, tile: int, gain: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diff = np.abs(whole.astype(np.float64) - tiled)
    panels = [
        (blurred, "blurred input"),
        (whole, "whole image (one graph run)"),
        (tiled, f"tiled ({tile}² tiles, blended)"),
        (np.clip(diff * gain, 0, 1), f"|whole − tiled| × {gain:g} (max {diff.max():.1e})"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (image, title) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resunet", type=Path, required=True, help="artifact of the shipped resunet-deblur")
    parser.add_argument("--vit", type=Path, help="artifact of the shipped vit-deblur (tiled-only)")
    parser.add_argument("--n", type=int, default=32, help="held-out images per size")
    parser.add_argument("--tile", type=int, default=256, help="forced tile side for the agreement check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--gain", type=float, default=1000.0, help="difference magnification in the figure")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from recon.runtime import Reconstructor
    from recon.runtime.artifact.manifest import load_manifest

    task_cfg = load_manifest(args.resunet).task_config
    rows, agreement, crops = [], {}, {}
    whole = Reconstructor.from_artifact(args.resunet, backend="cpu", threads=args.threads)
    tiled = Reconstructor.from_artifact(args.resunet, backend="cpu", threads=args.threads, tile=args.tile)
    with whole, tiled:
        for height, width in ((256, 256), (512, 512), (384, 640)):
            blurred, clean = heldout(task_cfg, args.n, height, width)
            out, seconds = run_all(whole, blurred)
            rows.append(gain_row(f"resunet whole {height}×{width}", out, blurred, clean, seconds))
            if (height, width) != (256, 256):
                crops[f"{height}x{width}"] = crop_comparison(whole, task_cfg, blurred, clean, out)
                out_tiled, seconds = run_all(tiled, blurred)
                rows.append(gain_row(f"resunet tiled {height}×{width}", out_tiled, blurred, clean, seconds))
                agreement[f"{height}x{width}"] = {
                    "tile": args.tile,
                    "overlap": tiled.spatial.overlap,
                    "psnr_whole_vs_tiled_db": agreement_db(out, out_tiled),
                    "max_abs": float(np.abs(out - out_tiled).max()),
                }
                if (height, width) == (512, 512) and args.figure is not None:
                    figure(args.figure, blurred[1], out[1], out_tiled[1], args.tile, args.gain)
    if args.vit is not None:
        with Reconstructor.from_artifact(args.vit, backend="cpu", threads=args.threads) as vit:
            for side in (256, 512):
                blurred, clean = heldout(task_cfg, args.n, side, side)
                out, seconds = run_all(vit, blurred)
                plan = vit.size_plan(side, side)
                rows.append(gain_row(f"vit {plan} {side}×{side}", out, blurred, clean, seconds))

    base = next(r for r in rows if r["setting"] == "resunet whole 256×256")["gain_db"]
    for row in rows:
        row["gain_minus_256_db"] = row["gain_db"] - base if row["setting"].startswith("resunet") else None
    cpu = cpu_description()
    report = {"cpu": cpu, "threads": args.threads, "rows": rows, "agreement": agreement, "crops": crops}
    print(f"CPU {cpu}, {args.threads} threads, {args.n} held-out images per size")
    print(f"{'setting':28} {'PSNR model':>11} {'blurred':>8} {'gain':>7} {'Δ vs 256²':>10} {'s/img':>7}")
    for r in rows:
        delta = "" if r["gain_minus_256_db"] is None else f"{r['gain_minus_256_db']:+.2f}"
        print(
            f"{r['setting']:28} {r['psnr_model']:11.2f} {r['psnr_blurred']:8.2f} {r['gain_db']:7.2f} "
            f"{delta:>10} {r['s_per_image']:7.3f}"
        )
    for size, c in crops.items():
        print(
            f"{size}, its {c['crops']} 256² crops: gain {c['gain_whole_on_crops_db']:.2f} dB from the "
            f"whole-image output, {c['gain_crops_alone_db']:.2f} dB acquired and run alone at 256² "
            f"(whole − alone {c['whole_minus_alone_db']:+.2f} dB)"
        )
    for size, a in agreement.items():
        print(
            f"tiled vs whole {size}: {a['psnr_whole_vs_tiled_db']:.1f} dB (tile {a['tile']}, overlap "
            f"{a['overlap']}, max |diff| {a['max_abs']:.2e})"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
