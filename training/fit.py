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
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from recon.runtime.io.files import write_json_atomic
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
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N


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


# Set by `request_stop` (recon-train's SIGUSR1 handler): the run stops after this step as if its time budget
# had run out (validation, best weights, held-out evaluation, card), so a supervisor with a hard deadline
# (scripts/train_gpu.py) gets weights instead of a killed process.
STOP_REQUESTED = threading.Event()


def request_stop(*_args) -> None:
    STOP_REQUESTED.set()


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


class _Trainer:
    """One run's state and its steps: set-up, resume, one optimizer step, validation, checkpoints, the log.

    `fit` drives it; the state that the old closures shared lives here as attributes.
    """

    def __init__(self, model: nn.Module, train: TrainingPairs, cfg: FitConfig, out: Path) -> None:
        self.cfg, self.train, self.out = cfg, train, out
        self.ddp = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if self.ddp else (0, 1)
        device = auto_device() if cfg.device == "auto" else torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = (
                True  # fixed crop and batch: cuDNN picks its fastest kernels once
            )
        if device.type == "cuda" and self.ddp and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        torch.manual_seed(cfg.seed)
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        # channels_last lets oneDNN/cuDNN pick their fast bf16/fp16 convolution kernels (≈1.3× on CPU).
        self.memory_format = torch.channels_last if self.amp_dtype is not None else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        ids = [device.index] if device.type == "cuda" else None
        self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids) if self.ddp else self.model
        self.criterion = parse_loss(cfg.loss)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.auto_length = cfg.time_budget is not None and cfg.steps is None
        self.calibrate = self.auto_length
        self.sampler = DistributedSampler(
            train, num_replicas=self.world, rank=self.rank, shuffle=True, seed=cfg.seed
        )
        per_rank = len(train) // self.world
        self.steps_per_epoch = per_rank // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the epoch has {per_rank} samples per process, fewer than one batch of {cfg.batch_size}"
            )
        self.total = cfg.steps or cfg.epochs * self.steps_per_epoch
        if self.calibrate:
            self.total = 10**9  # set from the measured speed after a few steps
        self.schedule = WarmupCosine(min(cfg.warmup, max(1, self.total // 10)), self.total)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self.schedule)
        self.step, self.history, self.best = 0, [], {"psnr": -math.inf}
        self.train_seconds = 0.0

    def resume(self) -> None:
        """Continue exactly from ``out/last.pt``: weights, optimizer, schedule, scaler, RNG, counters."""
        ck = torch.load(self.out / "last.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])  # restores schedule.total / warmup too
        self.scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        self.step, self.history, self.best = ck["step"], ck["history"], ck["best"]
        self.train_seconds = ck["train_seconds"]
        self.calibrate = self.calibrate and ck.get("calibrating", False)
        self.total = self.schedule.total

    def save(self, name: str) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "step": self.step,
            "history": self.history,
            "best": self.best,
            "train_seconds": self.train_seconds,
            "calibrating": self.calibrate,
            "fit_config": asdict(self.cfg),
        }
        torch.save(state, self.out / f"{name}.tmp")
        (self.out / f"{name}.tmp").replace(self.out / name)

    def write_log(self) -> None:
        if self.rank == 0:
            log = {
                "fit_config": asdict(self.cfg),
                "world_size": self.world,
                "device": str(self.device),
                "steps": self.step,
                "total_steps": self.total,
                "train_seconds": round(self.train_seconds, 1),
                "best": self.best,
                "epochs": self.history,
            }
            write_json_atomic(self.out / "log.json", log)

    def agreed(self, flag: bool) -> bool:
        # Rank 0's clock decides, so every rank stops at the same step.
        if not self.ddp:
            return flag
        t = torch.tensor([float(flag)], device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())

    def retarget(self, elapsed: float, seconds_per_step: float) -> None:
        # Fit the cosine's length to the time left; re-run each epoch: a shared machine's speed drifts.
        left = self.cfg.time_budget * 60 * 0.97 - elapsed
        t = torch.tensor([float(self.step + max(1, int(left / seconds_per_step / 1.03)))])  # ~3%: validation
        if self.ddp:
            dist.broadcast(t, 0)
        self.total = max(self.step + 1, int(t.item()))
        schedule = self.schedule
        if self.step < schedule.warmup:
            schedule.warmup = schedule.anchor_step = min(schedule.warmup, max(1, self.total // 10))
        schedule.retarget(self.step, self.total)

    def optimizer_step(self, items: list) -> float:
        """One step on one batch of (input, target) pairs; returns the loss."""
        x0 = torch.stack([it[0] for it in items]).to(self.device, memory_format=self.memory_format)
        x = torch.stack([it[1] for it in items]).to(self.device)
        amp = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype
            else contextlib.nullcontext()
        )
        with amp:
            estimate = self.net(x0)
        loss = self.criterion(estimate, x)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        return loss.item()

    def validate(self, valid: EvalSet, epoch: int, losses: list[float], bar: tqdm) -> None:
        """Validation metrics into the history; a new best is saved as best.pt."""
        metrics = image_metrics(predict(self.model, valid.inputs), valid.targets) if self.rank == 0 else {}
        record = {
            "epoch": epoch,
            "step": self.step,
            "loss": float(np.mean(losses)) if losses else None,
            "lr": self.sched.get_last_lr()[0],
            "seconds": round(self.train_seconds, 1),
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        self.history.append(record)
        if self.rank == 0:
            bar.write(json.dumps(record))
            if metrics["psnr"] > self.best["psnr"]:
                self.best = {"step": self.step, "epoch": epoch, **metrics}
                self.save("best.pt")


def _run_epoch(
    trainer: _Trainer, epoch: int, t0: float, bar: tqdm, stop_at_step: int | None, calib: list
) -> tuple[list[float], bool]:
    """The rest of one epoch (from where a resume left it); returns (losses, whether the budget ran out).
    ``calib`` holds the (step, elapsed) where speed calibration started, across calls."""
    cfg, tr = trainer.cfg, trainer
    order = list(tr.sampler)
    losses: list[float] = []
    stop = False
    for b in range(tr.step - epoch * tr.steps_per_epoch, tr.steps_per_epoch):
        items = [tr.train[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
        losses.append(tr.optimizer_step(items))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.2e}", lr=f"{tr.sched.get_last_lr()[0]:.1e}", refresh=False)
        elapsed = time.perf_counter() - t0
        if tr.calibrate:
            # Skip the first steps (allocator / oneDNN warm-up), time the next ones, then fix the cosine.
            if tr.step == 5:
                calib[:] = [(tr.step, elapsed)]
            elif calib and tr.step == calib[0][0] + 20:
                tr.retarget(elapsed, (elapsed - calib[0][1]) / 20)
                tr.calibrate = False
                bar.total = tr.total
        over_budget = cfg.time_budget is not None and elapsed > cfg.time_budget * 60
        if tr.agreed(over_budget or STOP_REQUESTED.is_set()):
            stop = True
        if tr.step >= tr.total or stop or (stop_at_step is not None and tr.step >= stop_at_step):
            break
    return losses, stop


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
    tr = _Trainer(model, train, cfg, out)
    if resume and (out / "last.pt").exists():
        tr.resume()
    bar = tqdm(
        total=tr.total if not tr.calibrate else None,
        initial=tr.step,
        disable=not progress or tr.rank != 0,
        desc="train",
        mininterval=5,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter() - tr.train_seconds
    calib: list[tuple[int, float]] = []
    tr.model.train()
    stop = False
    while tr.step < tr.total and not stop:
        epoch = tr.step // tr.steps_per_epoch
        tr.sampler.set_epoch(epoch)
        train.set_epoch(epoch)
        losses, stop = _run_epoch(tr, epoch, t0, bar, stop_at_step, calib)
        epoch_rate = (time.perf_counter() - t0 - tr.train_seconds) / max(1, len(losses))
        tr.train_seconds = time.perf_counter() - t0
        if tr.auto_length and not tr.calibrate and not stop and len(losses) >= 20:
            tr.retarget(tr.train_seconds, epoch_rate)
            bar.total = tr.total
        if tr.step % tr.steps_per_epoch == 0 or tr.step >= tr.total or stop:  # a finished epoch
            tr.validate(valid, epoch, losses, bar)
        tr.save("last.pt")
        tr.write_log()
        if stop_at_step is not None and tr.step >= stop_at_step:
            break
    bar.close()
    if tr.ddp:
        dist.barrier()
    if load_best and (out / "best.pt").exists():
        tr.model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
    return FitResult(tr.model, tr.best, tr.history, tr.step, tr.train_seconds)
