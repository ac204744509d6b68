"""Train the real-anatomy checkpoints on one GPU within a hard wall-clock budget; results into $OUT.

    OUT=out-gpu python scripts/train_gpu.py --minutes 5.5            # the H200 run (anatomy/ built first)
    OUT=/tmp/smoke python scripts/train_gpu.py --minutes 3 --smoke   # the same path, tiny, on a CPU

The four runs of `recon.training.recipes.GPU_RECIPES` (two CT ResUNet candidates, the CT CNN, the deblur
ResUNet) start together, each a `recon-train` process on 3 CPU threads sharing the GPU: one small network
leaves most of an H200 idle, and what limits each run is its own Python loop. Timeline: the synthetic pool is
built once on all cores and cached (runs/cache); every run then gets the same training budget, what is left
of ``--minutes`` after that and a reserve for data, the held-out evaluation and the selection. A run still
going at the deadline is stopped (SIGINT, then SIGKILL). The CT ResUNet candidate with the higher mean PSNR
gain on the held-out anatomy subjects (`recon-eval --set anatomy-heldout`) is kept; the pydicom CT slices
are never looked at here (they are the real held-out set, and not on the GPU machine anyway).

$OUT receives at most 8 files: resunet-ct, cnn-ct, resunet-deblur (.safetensors + .json card each),
train_gpu.json (timings, every run's held-out and anatomy numbers, the selection) and train_gpu.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESERVE_S = 110  # data + CUDA start per run (~30 s), held-out evaluation (~20 s), selection and copy (~30 s)
SMOKE = ["--steps", "4", "--pool", "8", "--batch-size", "2", "--crop", "64",
         "--steps-per-epoch", "2", "--heldout", "2", "--threads", "1"]  # fmt: skip


def log(message: str, lines: list[str]) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    lines.append(line)


def prepare_pool(n: int, smoke: bool) -> float:
    """The synthetic pool every run shares, built once on all cores (runs/cache); returns seconds."""
    t0 = time.time()
    from recon.training.anatomy import synthetic_clean

    synthetic_clean(n, 256, 0, ROOT / "runs" / "cache", workers=0 if not smoke else 2)
    return time.time() - t0


def launch(tag: str, budget: float, smoke: bool) -> tuple[subprocess.Popen, Path]:
    from recon.training.recipes import gpu_recipe_args

    args = gpu_recipe_args(tag, budget)
    if smoke:  # the same options, then the small values (click keeps an option's last value)
        args += SMOKE + (["--anatomy-512", "1", "--anatomy-128", "1"] if "--anatomy-512" in args else [])
    out = ROOT / "runs" / "gpu" / tag
    out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / "train.log", "w")  # noqa: SIM115 (lives as long as the process)
    env = {**os.environ, "OMP_NUM_THREADS": "1" if smoke else "3", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "recon.training.cli", *args]
    logfile.write(shlex.join(cmd) + "\n")
    logfile.flush()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logfile, stderr=subprocess.STDOUT, env=env)
    return proc, out


def wait_all(procs: dict, deadline: float, lines: list[str], grace: float = 45) -> None:
    """Wait for every run; at ``deadline - grace`` ask the ones still going to finish now (SIGUSR1: stop after
    this step, then held-out evaluation and weights), at ``deadline`` kill what is left."""
    polite = deadline - grace
    for proc, _ in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, polite - time.time()))
    for tag, (proc, _) in procs.items():
        if proc.poll() is None:
            log(f"{tag}: still running {grace:.0f} s before the deadline; SIGUSR1 (finish now)", lines)
            proc.send_signal(signal.SIGUSR1)
    for tag, (proc, _) in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            log(f"{tag}: still running at the deadline; killed", lines)
            proc.kill()
            proc.wait()
        log(f"{tag}: exit {proc.returncode}", lines)


def anatomy_score(stem: Path, name: str, device: str, n_slices: int) -> dict | None:
    """Mean PSNR (baseline, model, gain) on the held-out anatomy subjects at 256²."""
    from recon.training import eval_sets
    from recon.training.tasks import task_config_from_json
    from recon.training.weights import load_trained

    model_name, task = name.split("-", 1)
    if not stem.with_suffix(".json").exists():
        return None
    model, card = load_trained(model_name, task, stem.with_suffix(".json"))
    h = card["metrics"]["heldout"]
    if n_slices == 0:  # out of time: the synthetic held-out gain decides instead
        gain = h["model"]["psnr"] - h["baseline"]["psnr"]
        gains = {"mean": gain, "min": gain, "from": "synthetic held-out (no time left)"}
        result = {"n": 0, "baseline": {"psnr": None}, "model": {"psnr": None}, "gain_db": gains}
    else:
        images = eval_sets.set_images("anatomy-heldout", 256, ROOT / "anatomy")
        images = [images[i] for i in range(0, len(images), max(1, len(images) // n_slices))][:n_slices]
        result = eval_sets.evaluate_slices(model, task_config_from_json(card["task"]), images, device=device)
    return {
        "n": result["n"],
        "baseline_psnr": result["baseline"]["psnr"],
        "model_psnr": result["model"]["psnr"],
        "gain_db": result["gain_db"],
        "heldout": card["metrics"]["heldout"],
        "steps": card["training"]["steps"],
        "train_seconds": card["training"]["train_seconds"],
        "data_seconds": card["training"]["data_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=5.5, help="hard wall-clock budget of the whole script"
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "out-gpu"), help="[$OUT]")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny pools and batches: the CPU check of the path"
    )
    args = parser.parse_args()
    start = time.time()
    deadline = start + args.minutes * 60
    lines: list[str] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from recon.training.recipes import GPU_RECIPES

    if not (ROOT / "anatomy" / "train256.npz").exists():
        raise SystemExit("anatomy/ is missing: python scripts/anatomy_slices.py --out anatomy (and carry it)")
    summary: dict = {"minutes": args.minutes, "smoke": args.smoke, "runs": {}}
    pool = 8 if args.smoke else 1024
    summary["pool_seconds"] = round(prepare_pool(pool, args.smoke), 1)
    log(f"synthetic pool ({pool}) in {summary['pool_seconds']} s", lines)
    budget = max(0.2, (deadline - time.time() - RESERVE_S) / 60)
    budget = round(budget, 2)
    summary["train_minutes"] = budget
    log(f"training budget {budget} min per run, {len(GPU_RECIPES)} runs at once", lines)
    procs = {tag: launch(tag, budget, args.smoke) for tag in GPU_RECIPES}
    wait_all(procs, deadline - 35, lines)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    summary["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    best: dict[str, tuple[float, str]] = {}
    for tag, (proc, run_dir) in procs.items():
        name = GPU_RECIPES[tag][0]
        tail = (run_dir / "train.log").read_text(errors="replace").splitlines()[-3:]
        record: dict = {"exit": proc.returncode, "log_tail": tail}
        try:
            n_slices = 0 if time.time() > deadline - 15 else (4 if args.smoke else 48)
            score = anatomy_score(run_dir / name, name, device, n_slices)
        except Exception as error:  # a failed run must not cost the others their results
            score, record["error"] = None, f"{type(error).__name__}: {error}"
        if score:
            record.update(score)
            log(f"{tag}: held-out {score['heldout']['model']['psnr']:.2f} dB "
                f"(baseline {score['heldout']['baseline']['psnr']:.2f}); anatomy-heldout gain "
                f"{score['gain_db']['mean']:+.2f} dB (min {score['gain_db']['min']:+.2f}); "
                f"{score['steps']} steps", lines)  # fmt: skip
            if name not in best or score["gain_db"]["mean"] > best[name][0]:
                best[name] = (score["gain_db"]["mean"], tag)
        else:
            log(f"{tag}: no weights ({record.get('error', 'see log tail')}): {tail}", lines)
        summary["runs"][tag] = record
    summary["selected"] = {name: tag for name, (_, tag) in best.items()}
    for name, tag in summary["selected"].items():
        for suffix in (".safetensors", ".json"):
            shutil.copy2(ROOT / "runs" / "gpu" / tag / f"{name}{suffix}", out / f"{name}{suffix}")
        log(f"{name}: kept {tag} → {out / name}.*", lines)
    summary["seconds"] = round(time.time() - start, 1)
    (out / "train_gpu.json").write_text(json.dumps(summary, indent=1))
    log(f"done in {summary['seconds']} s", lines)
    (out / "train_gpu.log").write_text("\n".join(lines) + "\n")
    failed = [tag for tag, rec in summary["runs"].items() if rec["exit"] != 0 or "heldout" not in rec]
    if failed:
        raise SystemExit(f"runs without weights or with errors: {', '.join(failed)} (see train_gpu.json)")


if __name__ == "__main__":
    main()
