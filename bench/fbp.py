"""FBP per image at 256²: recon's FBP in torch and in ONNX Runtime vs ``skimage.transform.iradon``.

    .venv/bin/python bench/fbp.py [--views 60 180] [--repeats 20] [--threads 1]

Same sinogram (recon's radon of Shepp-Logan 256², n_detectors = 363) for all three; each time is the
median of ``--repeats`` runs at batch 1 after a warm-up. ONNX Runtime runs the exported ``FBP`` module
(dynamo exporter, dynamic batch) at ORT_ENABLE_ALL. ``--threads`` sets torch's and ONNX Runtime's
intra-op threads (scikit-image is single-threaded numpy). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, resize

from recon.runtime.backends.onnxruntime import new_session, session_options
from recon.training.physics import FBP, ParallelBeamCT

IMAGE_SIZE = 256


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: caches, ORT's first-run allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(image, 0, 1) - reference) ** 2)))


def onnx_session(fbp: FBP, n_views: int, n_detectors: int, threads: int, folder: Path) -> Any:
    path = folder / f"fbp-{n_views}.onnx"
    torch.onnx.export(
        fbp,
        (torch.zeros(2, 1, n_views, n_detectors),),
        str(path),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )
    return new_session(path, session_options(threads))


def bench_views(n_views: int, phantom: np.ndarray, repeats: int, threads: int, folder: Path) -> dict:
    ct = ParallelBeamCT(IMAGE_SIZE, n_views)
    fbp = FBP(ct).eval()
    with torch.no_grad():
        sinogram = ct.A(torch.from_numpy(phantom).float()[None, None])
    degrees = np.arange(n_views) * 180.0 / n_views
    sk_sinogram = sinogram[0, 0].double().numpy().T.copy()  # scikit-image: (detectors, angles)
    session = onnx_session(fbp, n_views, ct.n_detectors, threads, folder)
    feed = {session.get_inputs()[0].name: sinogram.numpy()}

    def run_skimage():
        return iradon(sk_sinogram, degrees, output_size=IMAGE_SIZE, circle=False)

    def run_torch():
        with torch.no_grad():
            return fbp(sinogram)

    def run_ort():
        return session.run(None, feed)[0]

    return {
        "views": n_views,
        "skimage_ms": median_ms(run_skimage, repeats),
        "torch_ms": median_ms(run_torch, repeats),
        "ort_ms": median_ms(run_ort, repeats),
        "skimage_psnr": psnr(run_skimage(), phantom),
        "torch_psnr": psnr(run_torch()[0, 0].numpy(), phantom),
        "ort_psnr": psnr(run_ort()[0, 0], phantom),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[60, 180])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    phantom = resize(shepp_logan_phantom(), (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True)
    with tempfile.TemporaryDirectory() as folder:
        rows = [bench_views(v, phantom, args.repeats, args.threads, Path(folder)) for v in args.views]
    setup = f"Shepp-Logan {IMAGE_SIZE}², batch 1, {args.threads} thread(s), median of {args.repeats}"
    print(f"FBP per image, {setup}")
    print()
    print(
        "| views | scikit-image iradon (ms) | recon torch (ms) | recon ONNX Runtime (ms) "
        "| iradon / torch | iradon / ORT | PSNR iradon / torch / ORT (dB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['views']} | {r['skimage_ms']:.1f} | {r['torch_ms']:.1f} | {r['ort_ms']:.1f} "
            f"| {r['skimage_ms'] / r['torch_ms']:.2f}× | {r['skimage_ms'] / r['ort_ms']:.2f}× "
            f"| {r['skimage_psnr']:.2f} / {r['torch_psnr']:.2f} / {r['ort_psnr']:.2f} |"
        )


if __name__ == "__main__":
    main()
