"""The fit loop: Adam + warmup/cosine, mixed precision, gradient clipping, validation, exact resume, DDP.

Exact resume: a training sample is a pure function of (seed, epoch, index) (see data.TrainingPairs), the
DistributedSampler order a function of (seed, epoch), and the checkpoint holds model, optimizer, scheduler,
grad scaler, RNG states and the step. Resuming from `last.pt` therefore continues bit-identically on CPU.

Multi-process: launch with torchrun (`torchrun --nproc-per-node 2 -m recon.training.cli train ...` or the
`recon-train` entry point under torchrun); `fit` wraps the model in DistributedDataParallel when a process
group is initialized (gloo on CPU, nccl on GPU, see distributed.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from recon.runtime.files import write_json_atomic
from recon.training.data import EvalSet, TrainingPairs
from recon.training.losses import parse_loss
from recon.training.metrics import image_metrics


@dataclass
class FitConfig:
    """What a run needs beyond the model and data. ``steps`` wins over ``epochs``; with ``time_budget``
    (minutes) and no ``steps`` the cosine length follows the measured speed; the run stops at the budget."""

    epochs: int = 10  # an epoch is one pass over the TrainingPairs dataset (its length sets the cadence)
    steps: int | None = None
    batch_size: int = 8  # per process
    lr: float = 1e-3
    loss: str = "mse"
    warmup: int = 50
    grad_clip: float = 1.0
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | bf16 | fp16 | off
    time_budget: float | None = None
    seed: int = 0


@dataclass
class FitResult:
    model: nn.Module  # the unwrapped model holding the best-validation weights
    best: dict
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0


class WarmupCosine:
    """Linear warmup then cosine decay to 0; an object (not a lambda) so LambdaLR saves its state.

    `retarget` changes the length mid-run without a jump: the cosine's progress continues from where it is
    and reaches 1 at the new total (a time budget re-estimates the total as the machine's speed drifts).
    """

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total
        self.anchor_step, self.anchor_progress = warmup, 0.0

    def progress(self, step: int) -> float:
        span = max(1, self.total - self.anchor_step)
        return min(
            1.0,
            max(0.0, self.anchor_progress + (1 - self.anchor_progress) * (step - self.anchor_step) / span),
        )

    def retarget(self, step: int, total: int) -> None:
        if step > self.anchor_step:
            self.anchor_progress, self.anchor_step = self.progress(step), step
        self.total = total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1 + math.cos(math.pi * self.progress(step)))


def auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 4, device: torch.device | None = None):
    """Run ``model`` over ``inputs`` in batches (eval mode, FP32), output on the CPU."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat(
        [
            model(inputs[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(inputs), batch_size)
        ]
    )
    model.train(was_training)
    return out


def evaluate(model: nn.Module, data: EvalSet, batch_size: int = 4) -> dict:
    """image_metrics of the model and of the no-learning baseline (its input) on ``data``."""
    return {
        "model": image_metrics(predict(model, data.inputs, batch_size), data.targets),
        "baseline": image_metrics(data.inputs, data.targets),
        "n": len(data),
        "size": list(data.targets.shape[-2:]),
    }


def start_at_identity(model: nn.Module) -> bool:
    """Initialize so that the untrained network returns its input, through the family's own
    ``init_identity()`` (residual families zero their branch's last layer; the plain cnn gets an identity
    path). Training then refines the degraded input instead of first learning to reproduce it, which a few CPU
    minutes cannot afford. Returns whether the model was changed (False for a family without the method)."""
    init_identity = getattr(model, "init_identity", None)
    return bool(init_identity()) if callable(init_identity) else False


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def fit(
    model: nn.Module,
    train: TrainingPairs,
    valid: EvalSet,
    cfg: FitConfig,
    out: str | Path,
    resume: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
    load_best: bool = True,
) -> FitResult:
    """Train ``model`` on ``train``, validate on ``valid`` each epoch, write ``out``/{last,best}.pt, log.json.

    ``stop_at_step`` ends this call early (as an interruption would) after saving ``last.pt``; a later call
    with ``resume=True`` continues from it. ``load_best`` puts the best-validation weights in the
    returned model (else it keeps the last ones).
    """
    out = Path(out)
    ddp = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    device = auto_device()
    if device.type == "cuda" and ddp:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(cfg.seed)
    amp_dtype = _amp_dtype(cfg.amp, device)
    # channels_last lets oneDNN/cuDNN pick their fast bf16/fp16 convolution kernels (≈1.3× on CPU).
    memory_format = torch.channels_last if amp_dtype is not None else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    net = (
        nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        if ddp
        else model
    )
    criterion = parse_loss(cfg.loss)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    calibrate = auto_length = cfg.time_budget is not None and cfg.steps is None
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    per_rank = len(train) // world
    steps_per_epoch = per_rank // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"the epoch has {per_rank} samples per process, fewer than one batch of {cfg.batch_size}"
        )
    total = cfg.steps or cfg.epochs * steps_per_epoch
    if calibrate:
        total = 10**9  # set from the measured speed after a few steps
    schedule = WarmupCosine(min(cfg.warmup, max(1, total // 10)), total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    step, history, best = 0, [], {"psnr": -math.inf}
    train_seconds = 0.0

    if resume and (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])  # restores schedule.total / warmup too
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        step, history, best, train_seconds = ck["step"], ck["history"], ck["best"], ck["train_seconds"]
        calibrate = calibrate and ck.get("calibrating", False)
        total = schedule.total

    def save(name: str, **extra) -> None:
        if rank != 0:
            return
        out.mkdir(parents=True, exist_ok=True)
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "step": step,
            "history": history,
            "best": best,
            "train_seconds": train_seconds,
            "calibrating": calibrate,
            "fit_config": asdict(cfg),
            **extra,
        }
        torch.save(state, out / f"{name}.tmp")
        (out / f"{name}.tmp").replace(out / name)

    def write_log() -> None:
        if rank == 0:
            log = {
                "fit_config": asdict(cfg),
                "world_size": world,
                "device": str(device),
                "steps": step,
                "total_steps": total,
                "train_seconds": round(train_seconds, 1),
                "best": best,
                "epochs": history,
            }
            write_json_atomic(out / "log.json", log)

    def agreed(flag: bool) -> bool:
        # Rank 0's clock decides, so every rank stops at the same step.
        if not ddp:
            return flag
        t = torch.tensor([float(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())

    def retarget(elapsed: float, seconds_per_step: float) -> None:
        # Fit the cosine's length to the time left; re-run each epoch: a shared machine's speed drifts.
        nonlocal total
        left = cfg.time_budget * 60 * 0.97 - elapsed
        t = torch.tensor([float(step + max(1, int(left / seconds_per_step / 1.03)))])  # ~3% for validation
        if ddp:
            dist.broadcast(t, 0)
        total = max(step + 1, int(t.item()))
        if step < schedule.warmup:
            schedule.warmup = schedule.anchor_step = min(schedule.warmup, max(1, total // 10))
        schedule.retarget(step, total)

    bar = tqdm(
        total=total if not calibrate else None,
        initial=step,
        disable=not progress or rank != 0,
        desc="train",
        mininterval=5,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter() - train_seconds
    calib_start: tuple[int, float] | None = None
    model.train()
    stop = False
    while step < total and not stop:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch)
        train.set_epoch(epoch)
        order = list(sampler)
        losses = []
        for b in range(step - epoch * steps_per_epoch, steps_per_epoch):
            items = [train[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            x0 = torch.stack([it[0] for it in items]).to(device, memory_format=memory_format)
            x = torch.stack([it[1] for it in items]).to(device)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                estimate = net(x0)
            loss = criterion(estimate, x)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.2e}", lr=f"{sched.get_last_lr()[0]:.1e}", refresh=False)
            elapsed = time.perf_counter() - t0
            if calibrate:
                # Skip the first steps (allocator / oneDNN warm-up), time the next ones, then fix the cosine.
                if step == 5:
                    calib_start = (step, elapsed)
                elif calib_start and step == calib_start[0] + 20:
                    retarget(elapsed, (elapsed - calib_start[1]) / 20)
                    calibrate = False
                    bar.total = total
            if cfg.time_budget is not None and agreed(elapsed > cfg.time_budget * 60):
                stop = True
            if step >= total or stop or (stop_at_step is not None and step >= stop_at_step):
                break
        epoch_rate = (time.perf_counter() - t0 - train_seconds) / max(1, len(losses))
        train_seconds = time.perf_counter() - t0
        if auto_length and not calibrate and not stop and len(losses) >= 20:
            retarget(train_seconds, epoch_rate)
            bar.total = total
        finished_epoch = step % steps_per_epoch == 0 or step >= total or stop
        if finished_epoch:
            metrics = image_metrics(predict(model, valid.inputs), valid.targets) if rank == 0 else {}
            record = {
                "epoch": epoch,
                "step": step,
                "loss": float(np.mean(losses)) if losses else None,
                "lr": sched.get_last_lr()[0],
                "seconds": round(train_seconds, 1),
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            history.append(record)
            if rank == 0:
                bar.write(json.dumps(record))
                if metrics["psnr"] > best["psnr"]:
                    best = {"step": step, "epoch": epoch, **metrics}
                    save("best.pt")
        save("last.pt")
        write_log()
        if stop_at_step is not None and step >= stop_at_step:
            break
    bar.close()
    if ddp:
        dist.barrier()
    if load_best and (out / "best.pt").exists():
        model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
    return FitResult(model, best, history, step, train_seconds)
