"""What the hardening tests call a clear error, and how many fuzz cases a run makes.

A *clear* error is one a host can act on without reading recon's source:
- its type is `ValueError` (input or file: `ArtifactError` and `ImageIOError` are subclasses) or
  `BackendError` (the machine cannot run the backend);
- its message is one line and names what was expected (a shape, a dtype, a format, what to re-export).
Anything else (TypeError, KeyError, IndexError, onnxruntime's own exception types, a segfault, a
traceback out of a CLI) is a crash. A result is correct only when it matches an independent reference,
is finite and has the shape the artifact promises.

Case counts: each fuzz test runs twice, `[quick]` in the default run (a few dozen to 150 cases) and
`[full]` marked slow (`make test-slow`) with at least 1000 cases per target. `RECON_FUZZ_EXAMPLES=N`
overrides both (e.g. `RECON_FUZZ_EXAMPLES=5000`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest
from hypothesis import HealthCheck, settings

from recon.runtime import BackendError
from recon.runtime.cli.main import run_command

FULL_EXAMPLES = 1000
SCALES = [pytest.param("quick"), pytest.param("full", marks=pytest.mark.slow)]


def fuzz_settings(scale: str, quick: int) -> settings:
    """Hypothesis settings for one fuzz target: `quick` cases, or FULL_EXAMPLES when scale is "full"."""
    override = os.environ.get("RECON_FUZZ_EXAMPLES")
    count = int(override) if override else (quick if scale == "quick" else FULL_EXAMPLES)
    return settings(
        max_examples=count,
        deadline=None,
        database=None,  # nothing written into the checkout; a failure prints its seed and example
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


CLEAR = (ValueError, BackendError)


def assert_clear(error: BaseException, *expected: str) -> None:
    """`error` is a clear error whose one-line message matches one of the `expected` patterns."""
    assert isinstance(error, CLEAR), f"not a clear error type: {type(error).__name__}: {error}"
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    if expected:
        assert any(re.search(p, message) for p in expected), f"{message!r} names none of {expected}"


def recon_run(*args: object) -> tuple[int, str]:
    """recon-run in this process: (exit code, stderr). Any exception it lets out fails the test."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_command.main([*map(str, args)], prog_name="recon-run")
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
    return int(code), stderr.getvalue()
