"""Training losses: MSE, L1, SSIM (1 − SSIM, the skimage-compatible one from metrics.py) and weighted mixes.

A loss is written as a spec string: ``"mse"``, ``"l1"``, ``"ssim"`` or a weighted sum such as
``"0.8*l1+0.2*ssim"``. `parse_loss` turns the string into a module; its `spec` round-trips into cards.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from recon.training.metrics import ssim

_TERMS = {
    "mse": lambda x, y: F.mse_loss(x, y),
    "l1": lambda x, y: F.l1_loss(x, y),
    "ssim": lambda x, y: 1.0 - ssim(x, y).mean(),
}
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z0-9]+)\s*$")


class MixedLoss(nn.Module):
    """Σ wᵢ·lossᵢ(x̂, x) over named terms."""

    def __init__(self, terms: list[tuple[float, str]]):
        super().__init__()
        self.terms = terms

    @property
    def spec(self) -> str:
        return "+".join(name if w == 1.0 else f"{w:g}*{name}" for w, name in self.terms)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Losses in float32 even under autocast: SSIM's variances cancel badly in half precision.
        estimate, target = estimate.float(), target.float()
        return sum(w * _TERMS[name](estimate, target) for w, name in self.terms)


def parse_loss(spec: str) -> MixedLoss:
    """``"0.8*l1+0.2*ssim"`` → MixedLoss([(0.8, "l1"), (0.2, "ssim")]). Raises ValueError on bad specs."""
    terms = []
    for part in spec.lower().split("+"):
        m = _TERM.match(part)
        if not m or m.group(2) not in _TERMS:
            raise ValueError(
                f"bad loss term {part.strip()!r} in {spec!r}; use e.g. 'mse', '0.8*l1+0.2*ssim' "
                f"with terms {sorted(_TERMS)}"
            )
        terms.append((float(m.group(1)) if m.group(1) else 1.0, m.group(2)))
    return MixedLoss(terms)
