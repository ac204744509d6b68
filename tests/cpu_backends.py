"""The CPU backends installed here: the runtime's backend tests run once per engine (issue 14).

onnxruntime is always there in the test environment; OpenVINO when the `[openvino]` extra is installed (CI
installs it: Makefile EXTRAS). Without it the OpenVINO cases are skipped and say why.
"""

from __future__ import annotations

import importlib.util

import pytest

OPENVINO = importlib.util.find_spec("openvino") is not None
CPU_BACKENDS = [
    "onnxruntime-cpu",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(
            not OPENVINO, reason="OpenVINO is not installed (pip install recon[openvino])"
        ),
    ),
]
