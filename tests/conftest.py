"""Shared test helpers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cpu_backends
from cpu_backends import CPU_BACKENDS  # noqa: E402

try:
    import torch

    torch.set_num_threads(2)
except ImportError:  # the runtime tests also run without torch
    torch = None


@pytest.fixture(autouse=True)
def _seed():
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request) -> str:
    """Each installed CPU backend in turn: "onnxruntime-cpu", "openvino"."""
    return request.param
