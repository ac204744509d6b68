"""torch.distributed set-up for `recon-train` under torchrun: gloo on CPU, nccl on GPU. Nothing home-made.

torchrun --nproc-per-node 2 -m recon.training.cli --model resunet --task deblur ...
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False when running as a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
