"""What every recon command shares (runtime, training and export alike): one-line errors, option parsing.

User mistakes print one line, `error: …`, and exit non-zero; so does a bug, as "internal error …"
(RECON_DEBUG=1 shows the traceback). User mistakes are click's errors and the ValueError / OSError /
RuntimeError families, which every recon error type belongs to (ArtifactError, ImageIOError, WeightsError:
ValueError; BackendError, ExportError: RuntimeError). Imports nothing of recon, so any layer may use it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

PRECISIONS = ["auto", "fp32", "fp16", "bf16", "int8"]


def one_line(error: BaseException | str) -> str:
    """An error as one line, even when it quotes a damaged file's text (a stray CR/LF in a DICOM tag)."""
    text = " ".join(str(error).split("\n")).replace("\r", " ").strip()
    return text or type(error).__name__


def fail(message: str, code: int = 1) -> None:
    click.echo("error: " + one_line(message), err=True)
    sys.exit(code)


class OneLineErrors:
    """click's `main`, with user errors reduced to one line and no traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)  # type: ignore[misc]
        except click.UsageError as error:
            hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
            fail(error.format_message() + hint, 2)
        except click.ClickException as error:
            fail(error.format_message(), error.exit_code)
        except (click.Abort, KeyboardInterrupt) as error:
            # click turns Ctrl-C into Abort (from the KeyboardInterrupt); 130 = 128 + SIGINT, as shells do
            if isinstance(error, KeyboardInterrupt) or isinstance(error.__cause__, KeyboardInterrupt):
                fail("interrupted", 130)
            fail("aborted", 1)
        except (ValueError, OSError, RuntimeError) as error:
            if os.environ.get("RECON_DEBUG"):
                raise
            fail(str(error) or type(error).__name__)
        except Exception as error:  # a bug, not a user mistake: one line too, unless asked for the traceback
            if os.environ.get("RECON_DEBUG"):
                raise
            first = (str(error).strip().splitlines() or [""])[0]
            fail(f"internal error {type(error).__name__}: {first} (RECON_DEBUG=1 shows the traceback)")
        sys.exit(result if isinstance(result, int) else 0)


class Command(OneLineErrors, click.Command):
    pass


class Group(OneLineErrors, click.Group):
    pass


def int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values
