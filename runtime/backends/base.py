"""The one small interface every backend implements (after Polygraphy's runner template).

Public methods guard state and validate; subclasses fill in the `*_impl` methods. A backend is a context
manager, and each `infer` records its own timings (per thread, so one backend can serve several threads).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

# The stages a backend may time. Backends report the subset they can tell apart (ORT on the CPU: compute).
STAGES = ("prepare", "h2d", "compute", "d2h", "finish")


class BackendError(RuntimeError):
    """A backend cannot run here (missing library, device, provider); the message says what to do."""


class Backend(ABC):
    """activate → infer (any number of times, any thread) → deactivate."""

    #: the selection name, e.g. "onnxruntime-cpu"
    name: str = "backend"

    def __init__(self) -> None:
        self.is_active = False
        self.precision: str | None = None  # the precision of the file actually loaded
        self.file: str | None = None  # the artifact file actually loaded
        self._local = threading.local()

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> Backend:
        if self.is_active:
            raise BackendError(f"{self.name}: already active; deactivate() it before activating again")
        self.activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(self, *exc_info: Any) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (B, 1, H_in, W_in) float32, C-contiguous → (B, 1, H, W) float32."""
        if not self.is_active:
            raise BackendError(f"{self.name}: not active; call activate() or use it as a context manager")
        if batch.dtype != np.float32 or not batch.flags.c_contiguous:
            raise ValueError(f"{self.name}: infer() takes C-contiguous float32, got {batch.dtype}")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        output = self.infer_impl(batch, timings)
        timings["total"] = time.perf_counter() - start
        if "compute" not in timings and len(timings) == 1:
            timings["compute"] = timings["total"]
        self._local.timings = timings
        return output

    @property
    def last_timings(self) -> dict[str, float]:
        """Seconds per stage of this thread's last `infer` (always has "total")."""
        return getattr(self._local, "timings", {})

    # -- to implement ----------------------------------------------------------------------------
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        """Run and fill `timings` with the stages this backend can tell apart (seconds)."""

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> dict[str, Any]:
        """What was loaded, for logs and reports."""
        return {"backend": self.name, "file": self.file, "precision": self.precision}
