"""The demo's figure and latency table: truth / degraded / reconstructed with PSNR and SSIM in the titles.

Usage: python scripts/demo_figure.py DEMO_OUT   (after scripts/demo.sh has filled DEMO_OUT)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return 10 * np.log10(1 / mse)


def ssim(x: np.ndarray, ref: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(x, 0, 1), ref, data_range=1.0))


def degraded_view(task: str, measurement: np.ndarray, task_cfg: dict) -> np.ndarray:
    """What a person would look at without the network: the blurred image, or the FBP of the sinogram.

    ``task_cfg`` is the JSON recon-simulate wrote (`simulate.json`'s "task")."""
    if task == "deblur":
        return measurement
    import torch

    from recon.training.tasks import build_physics, task_config_from_json

    ct = build_physics(task_config_from_json(task_cfg))
    with torch.no_grad():
        return ct.A_dagger(torch.from_numpy(measurement)[None, None].float())[0, 0].numpy()


def main(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for task in ("deblur", "ct"):
        simulated = json.loads((out / f"{task}-in" / "simulate.json").read_text())
        for name in simulated["files"]:
            truth = np.load(out / f"{task}-in" / "targets" / f"{name}.npy").astype(np.float32)
            measurement = np.load(out / f"{task}-in" / "measurements" / f"{name}.npy").astype(np.float32)
            recon = np.load(out / f"{task}-recon" / f"{name}.npy").astype(np.float32)
            rows.append((task, name, truth, degraded_view(task, measurement, simulated["task"]), recon))

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    scores = {}
    for (task, name, truth, degraded, recon), ax in zip(rows, axes, strict=True):
        baseline = "blurred" if task == "deblur" else "FBP"
        for col, (title, image) in enumerate(
            [("truth", truth), (baseline, degraded), ("recon (resunet)", recon)]
        ):
            ax[col].imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax[col].set_axis_off()
            label = f"{task} {name}: {title}" if col == 0 else title
            if col:
                label += f"\nPSNR {psnr(image, truth):.2f} dB, SSIM {ssim(image, truth):.3f}"
            ax[col].set_title(label, fontsize=8)
        s = scores.setdefault(task, {"baseline": [], "recon": []})
        s["baseline"].append((psnr(degraded, truth), ssim(degraded, truth)))
        s["recon"].append((psnr(recon, truth), ssim(recon, truth)))
    fig.tight_layout()
    figure = out / "demo.png"
    fig.savefig(figure, dpi=80)

    print(f"\nfigure: {figure}\n")
    print("| task | images | baseline PSNR / SSIM | resunet PSNR / SSIM |")
    print("|---|---|---|---|")
    for task, s in scores.items():
        b, r = np.mean(s["baseline"], axis=0), np.mean(s["recon"], axis=0)
        print(f"| {task} | {len(s['recon'])} | {b[0]:.2f} dB / {b[1]:.3f} | {r[0]:.2f} dB / {r[1]:.3f} |")

    print("\nlatency (recon-bench, this machine):\n")
    print("| artifact | backend | batch | p50 ms | p99 ms | images/s |")
    print("|---|---|---|---|---|---|")
    for task in ("deblur", "ct"):
        report = json.loads((out / f"bench-{task}.json").read_text())
        for cell in report["reports"]:
            s = cell.get("summary", cell)
            print(
                f"| resunet-{task} | {s['label']} | {s['batch_size']} | {s['p50_ms']:.1f} | "
                f"{s['p99_ms']:.1f} | "
                f"{s['throughput_img_s']:.1f} |"
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/demo_figure.py DEMO_OUT")
    main(Path(sys.argv[1]))
