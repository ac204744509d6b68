"""`recon verify`: prove on this machine that an artifact still gives its validated images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from recon.runtime.cli.base import PRECISIONS, Command
from recon.runtime.verify import GoldenResult

EPILOG = """\b
Examples:
  recon verify artifacts/resunet-deblur
  recon verify models/resunet-deblur              (its newest version; records the outcome)
  recon verify models/resunet-deblur@2 --backend openvino --precision bf16 --json
Exit status: 0 when every backend/precision run passed, 1 otherwise."""


class ArtifactPath(click.ParamType):
    """An artifact folder, a model folder (models/NAME) or one of its versions (models/NAME@N)."""

    name = "artifact"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path:
        from recon.runtime.versions import split_reference

        base, _ = split_reference(value)
        if not (Path(value).is_dir() or base.is_dir()):
            self.fail(f"{value!r} is not a folder (an artifact, models/NAME or models/NAME@N)", param, ctx)
        return Path(value)


def verify_before_run(reconstructor: Any) -> None:
    """recon-run --verify: the golden set on the backend and precision about to run; refuse on failure."""
    result = reconstructor.verify()
    click.echo(f"verify: {result.line()}", err=True)
    if not result.passed:
        raise RuntimeError(
            f"{reconstructor.directory}: verification failed on {result.backend}/{result.precision} "
            f"({result.reason}); nothing was reconstructed"
        )


def print_report(report: dict) -> None:
    version = f" version {report['version']}" if report.get("version") is not None else ""
    click.echo(f"{report['name']}{version} ({report['artifact']})")
    for result in report["results"]:  # JSON writes an infinite PSNR (identical outputs) as "inf"
        psnr = None if result.get("psnr") is None else float(result["psnr"])
        click.echo("  " + GoldenResult(**{**result, "psnr": psnr}).line())
    for line in report["skipped"]:
        click.echo(f"  skipped {line}")
    env = report["environment"]
    libraries = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    click.echo(f"  on {env['cpu']}; {env['os']}; Python {env['python']}")
    click.echo(f"  libraries {libraries}" + (f"; GPU {env['gpu']}" if env.get("gpu") else ""))
    verdict = "PASSED" if report["passed"] else "FAILED"
    click.echo(f"verification {verdict}" + (f": {report['reason']}" if report.get("reason") else ""))
    if report.get("record"):
        click.echo(f"  recorded in {report['record']}")


@click.command("verify", cls=Command, epilog=EPILOG)
@click.argument("artifact", type=ArtifactPath())
@click.option(
    "--backend", "-b", default=None, help="Only this backend (default: every one measured at export)."
)
@click.option("--precision", type=click.Choice(PRECISIONS[1:]), default=None, help="Only this precision.")
@click.option("--threads", type=int, default=None, help="CPU engine threads (default: one per core).")
@click.option("--no-record", is_flag=True, help="Do not write the model folder's verification record.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(
    artifact: Path, backend: str | None, precision: str | None, threads: int | None, no_record: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Run the artifact's golden inputs here and compare with the outputs validated at export.

    ARTIFACT is an artifact folder, a model folder (models/NAME: its newest version) or models/NAME@N.
    Reports per backend and precision the max error and PSNR against the references, pass or fail against
    the tolerance measured at export, and this machine's CPU, libraries and GPU. For a version in a model
    folder the outcome is recorded (models/NAME/verification/N.json): only verified versions are run by
    `Reconstructor.from_artifact("models/NAME")`.
    """
    from recon.runtime.qualify import qualify

    report = qualify(artifact, backend, precision, threads=threads, record=not no_record)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    sys.exit(0 if report["passed"] else 1)
