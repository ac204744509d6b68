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


# One convention for every recon command, applied here so that a command (or an option another engineer
# adds) conforms without repeating it: -h and --help, --version, defaults shown in the help, one width.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}


def recon_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recon")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"{ctx.command_path} (recon) {recon_version()}")
    ctx.exit()


def version_option() -> click.Option:
    return click.Option(
        ["--version"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_version,
        help="Print recon's version and exit.",
    )


class _Conventions:
    """Adds the shared context settings (a command's own settings win) and --version."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {**CONTEXT_SETTINGS, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        if not any("--version" in getattr(p, "opts", ()) for p in self.params):  # type: ignore[attr-defined]
            self.params.append(version_option())  # type: ignore[attr-defined]


class Command(_Conventions, OneLineErrors, click.Command):
    pass


class Group(_Conventions, OneLineErrors, click.Group):
    pass


def parse_size(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """`--size`, spelled one way on every command: N (N×N) or H,W. Returns (H, W), a list of them for a
    repeatable option, or None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return [parse_size(ctx, param, one) for one in value]
    text = str(value).replace("x", ",").replace("×", ",")
    try:
        parts = [int(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise click.BadParameter(f"expected N or H,W (e.g. 512 or 512,384), got {value!r}")
    if min(parts) < 1:
        raise click.BadParameter(f"the size must be positive, got {value!r}")
    from recon.runtime import limits

    if max(parts) > limits.MAX_IMAGE_SIDE:  # bounded work: checked before anything is allocated
        raise click.BadParameter(
            f"H and W must lie in 1..{limits.MAX_IMAGE_SIDE} (recon.runtime.limits), got {value!r}"
        )
    return parts[0], parts[1]


def int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values
