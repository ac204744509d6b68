"""Fixtures: small artifacts (see runtime_artifacts.py) and a CPU Reconstructor shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cpu_backends import CPU_BACKENDS
from runtime_artifacts import build_artifact


@pytest.fixture(scope="session")
def deblur_artifact(tmp_path_factory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("art") / "deblur", "deblur", with_fp16=True, with_int8=True)


@pytest.fixture(scope="session")
def any_size_artifact(tmp_path_factory) -> Path:
    """The deblur conv with symbolic H × W and a "spatial" entry (8 to 1024 px a side, whole)."""
    return build_artifact(
        tmp_path_factory.mktemp("art") / "any-size", "deblur", with_int8=True, any_size=True
    )


@pytest.fixture(scope="session")
def ct_artifact(tmp_path_factory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("art") / "ct", "ct")


@pytest.fixture(scope="session", params=CPU_BACKENDS)
def deblur(deblur_artifact, request):
    """A Reconstructor on each installed CPU backend in turn."""
    from recon.runtime import Reconstructor

    with Reconstructor.from_artifact(deblur_artifact, backend=request.param, threads=1) as reconstructor:
        yield reconstructor
