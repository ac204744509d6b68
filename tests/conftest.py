"""Shared test helpers."""

import pytest

try:
    import torch

    torch.set_num_threads(2)
except ImportError:  # the runtime tests also run without torch
    torch = None


@pytest.fixture(autouse=True)
def _seed():
    if torch is not None:
        torch.manual_seed(0)
