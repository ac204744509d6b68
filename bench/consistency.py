"""False alarms and detection rates of an artifact's consistency check (docs/reliability.md).

    .venv/bin/python bench/consistency.py ARTIFACT [--n-eval 500] [--n-shift 100] [--cache DIR] [--json F]
    .venv/bin/python bench/consistency.py --summary A.json B.json ...   # one row per artifact, per set
    .venv/bin/python bench/consistency.py ARTIFACT --engines [--threads 2]  # the check's time per engine

Sets, all simulated with the training physics from `recon.training.data` images that neither training nor
the export's calibration used:
- `in-distribution`: `--n-eval` phantoms and training-source crops from a fresh seed stream
  (recon.export.consistency.EVALUATION_STREAM) — the false-alarm rate (target ≤ 1%);
- `held-out`: the 32-image held-out set of the weight cards (other source images) — target 0 flagged;
- shifted inputs, `--n-shift` each, from the first clean images of the in-distribution set — detection
  rate (target ≥ 90%): deblur: noise ×5, motion blur at 135°, twice as long, Gaussian blur (σ² = 4), 12-bit
  data in a 16-bit container (× 4095/65535), inverted polarity (1 − y: MONOCHROME1 read as MONOCHROME2);
  CT: noise ×5, 10% of views zeroed, detector-channel gains off by up to ±20%, a global 20% gain error
  (×1.2 and ×0.8), ×0.1 and ×10 units.

Every image goes through the artifact exactly as deployed (`Reconstructor`, CPU, FP32, clipped) and its
`consistency.onnx`. The network's outputs are cached under `--cache` keyed by model.onnx's sha256, so a
re-run with another consistency graph only re-runs that. Prints a markdown table: per set, the fraction
flagged, which statistics fired, and the mean PSNR (against the clean image) of flagged and unflagged outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.export.consistency import EVALUATION_STREAM, in_distribution_set, run_artifact
from recon.runtime.artifact.manifest import load_manifest
from recon.runtime.backends.openvino import openvino_available
from recon.runtime.consistency import ConsistencyGuard
from recon.runtime.profiling import cpu_description
from recon.training.data import heldout_set
from recon.training.tasks import simulate


def shifted_sets(cfg: Any, y: np.ndarray, clean: np.ndarray) -> dict[str, np.ndarray]:
    def sim(**changes) -> np.ndarray:
        changed = cfg.with_overrides(**changes)
        return simulate(torch.from_numpy(clean), changed, torch.Generator().manual_seed(3)).numpy()

    noise5 = {"noise ×5": lambda: sim(noise_level=5 * cfg.noise_level)}
    if cfg.task == "deblur":
        return {
            **noise5,
            "motion blur at 135°": lambda: sim(angle=135.0),
            "motion blur twice as long": lambda: sim(kernel_size=2 * cfg.kernel_size + 1),
            "Gaussian blur (σ² = 4) instead": lambda: sim(kernel_kind="gaussian", variance=4.0),
            "12-bit data in 16-bit units (×4095/65535)": lambda: y * np.float32(4095 / 65535),
            "inverted polarity (1 − y)": lambda: 1 - y,
        }
    rng = np.random.default_rng(5)

    def views_zeroed() -> np.ndarray:
        out = y.copy()
        for i in range(len(out)):  # 10% of the views, a different random set per image
            out[i, :, rng.choice(cfg.n_views, cfg.n_views // 10, replace=False)] = 0
        return out

    def channel_gains() -> np.ndarray:
        gains = rng.uniform(0.8, 1.2, (len(y), 1, 1, y.shape[-1])).astype(np.float32)
        return y * gains

    return {
        **noise5,
        "10% of views zeroed": views_zeroed,
        "detector gains off by up to ±20%": channel_gains,
        "global gain ×1.2": lambda: y * np.float32(1.2),
        "global gain ×0.8": lambda: y * np.float32(0.8),
        "units ×0.1": lambda: y * np.float32(0.1),
        "units ×10": lambda: y * np.float32(10),
    }


def outputs(artifact: Path, name: str, y: np.ndarray, cache: Path | None, key: str) -> np.ndarray:
    path = None
    if cache is not None:
        digest = hashlib.sha256(f"{key}|{name}|{y.shape}".encode()).hexdigest()[:16]
        path = cache / f"{digest}.npy"
        if path.exists():
            return np.load(path)
    try:
        x = run_artifact(artifact, y, threads=None)
    except ValueError:  # the runtime refuses some inputs (its range check): those images are NaN here
        parts = []
        for one in y:
            try:
                parts.append(run_artifact(artifact, one[None], threads=None))
            except ValueError:
                parts.append(None)
        shape = next((p.shape[1:] for p in parts if p is not None), None)
        if shape is None:
            return np.full((len(y), 1, 1, 1), np.nan, np.float32)
        x = np.stack([p[0] if p is not None else np.full(shape, np.nan, np.float32) for p in parts])
    x = x.reshape(len(y), 1, *x.shape[-2:])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
    return x


def psnr(x: np.ndarray, clean: np.ndarray) -> np.ndarray:
    mse = ((np.clip(x, 0, 1) - clean) ** 2).reshape(len(x), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def summary(paths: list[Path]) -> None:
    """One markdown table over several --json results: per artifact and set, flagged / n and the mean PSNR
    of the flagged outputs (dB)."""

    def cell(row: dict) -> str:
        psnr = row["psnr_flagged"]
        return f"{row['flagged']}/{row['n']}" + (f" ({psnr:.1f})" if psnr is not None else "")

    results = [json.loads(path.read_text()) for path in paths]
    sets = list(dict.fromkeys(row["set"] for result in results for row in result["rows"]))
    print("| artifact | " + " | ".join(sets) + " |")
    print("|---|" + "---:|" * len(sets))
    for result in results:
        rows = {row["set"]: row for row in result["rows"]}
        cells = [cell(rows[s]) if s in rows else "–" for s in sets]
        print(f"| {Path(result['artifact']).name} | " + " | ".join(cells) + " |")


def engines(artifact: Path, threads: int | None, rounds: int = 8, iters: int = 5) -> None:
    """The check alone on each CPU engine, batch 1 and 8, interleaved round by round (ms per image)."""
    import time

    from recon.export.consistency import CALIBRATION_STREAM

    manifest = load_manifest(artifact)
    y, clean = in_distribution_set(manifest.task_config, 8, CALIBRATION_STREAM)
    names = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
    guards = {name: ConsistencyGuard(artifact, manifest, threads=threads, engine=name) for name in names}
    print(f"{manifest.name}: consistency check alone, {threads or 'default'} threads; {cpu_description()}")
    print("| batch | " + " | ".join(f"{n} (ms/image)" for n in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for batch in (1, 8):
        x, m = clean[:batch], y[:batch]
        times: dict[str, list[float]] = {n: [] for n in names}
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                guards[name].score(x, m)  # untimed: settles caches (and compiles a new shape)
                start = time.perf_counter()
                for _ in range(iters):
                    guards[name].score(x, m)
                times[name].append((time.perf_counter() - start) / iters / batch)
        print(f"| {batch} | " + " | ".join(f"{1e3 * np.median(times[n]):.2f}" for n in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, nargs="?")
    parser.add_argument("--summary", type=Path, nargs="+", default=None, help="--json files to tabulate")
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--n-shift", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--dump", type=Path, default=None, help="Every image's statistics per set (.npz).")
    parser.add_argument("--engines", action="store_true", help="Time the check alone on each CPU engine.")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    if args.artifact is None:
        parser.error("give an ARTIFACT, or --summary with --json files")
    if args.engines:
        engines(args.artifact, args.threads)
        return

    manifest = load_manifest(args.artifact)
    cfg = manifest.task_config
    guard = ConsistencyGuard(args.artifact, manifest)
    key = manifest.files["model.onnx"].sha256
    y_eval, clean_eval = in_distribution_set(cfg, args.n_eval, EVALUATION_STREAM, seed=1)
    held = heldout_set(cfg, 32, cfg.image_size)
    sets: dict[str, tuple] = {
        "in-distribution (fresh seeds)": (y_eval, clean_eval, "false alarm"),
        "held-out (32, other images)": (held.measurements.numpy(), held.targets.numpy(), "false alarm"),
    }
    n = min(args.n_shift, args.n_eval)
    for name, make in shifted_sets(cfg, y_eval[:n], clean_eval[:n]).items():
        sets[name] = (make(), clean_eval[:n], "detection")

    rows, dump = [], {}
    for name, (y, clean, kind) in sets.items():
        x = outputs(args.artifact, name, y, args.cache, key)
        refused = np.isnan(x.reshape(len(x), -1)).all(1)  # the runtime's range check stopped them first
        scores = guard.score(x[~refused], y[~refused]) if (~refused).any() else []
        flagged_scored = np.array([s.flagged for s in scores], bool)
        flagged = refused.copy()
        flagged[~refused] = flagged_scored
        dump[name] = np.array([[s.statistics[k] for k in guard.statistics] for s in scores])
        quality = np.full(len(y), np.nan)
        quality[~refused] = psnr(x[~refused], clean[~refused])
        fired: dict[str, int] = (
            {"refused by the input range check": int(refused.sum())} if refused.any() else {}
        )
        for s in scores:
            for reason in s.reasons:
                stat = reason.split(" ")[0]
                fired[stat] = fired.get(stat, 0) + 1
        scored = flagged & ~refused
        rows.append(
            {
                "set": name,
                "kind": kind,
                "n": len(y),
                "flagged": int(flagged.sum()),
                "rate": float(flagged.mean()),
                "refused": int(refused.sum()),
                "psnr_flagged": float(quality[scored].mean()) if scored.any() else None,
                "psnr_unflagged": float(quality[~flagged].mean()) if (~flagged).any() else None,
                "residual_median": float(np.median([s.residual for s in scores])) if scores else None,
                "fired": dict(sorted(fired.items(), key=lambda kv: -kv[1])),
            }
        )
        print(f"{name}: {flagged.sum()}/{len(y)}", flush=True)

    def db(v: float | None, digits: int = 2) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    entry = guard.entry
    print(
        f"\n{manifest.name}: threshold r ≤ {entry.threshold:.4g}, calibration n = "
        f"{entry.details['calibration']['n']}, margin {entry.details.get('margin')}; "
        f"guard on {guard.engine}; "
        f"{cpu_description()}"
    )
    print("| set | n | caught | rate | PSNR flagged / unflagged (dB) | median r | statistics that fired |")
    print("|---|---:|---:|---:|---|---:|---|")
    for r in rows:
        fired = ", ".join(f"{k} {v}" for k, v in r["fired"].items()) or "–"
        print(
            f"| {r['set']} | {r['n']} | {r['flagged']} | {r['rate'] * 100:.1f}% | "
            f"{db(r['psnr_flagged'])} / {db(r['psnr_unflagged'])} | {db(r['residual_median'], 4)} | {fired} |"
        )
    if args.dump is not None:
        np.savez(args.dump, statistics=np.array(guard.statistics), **dump)
    if args.json is not None:
        args.json.write_text(json.dumps({"artifact": str(args.artifact), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
