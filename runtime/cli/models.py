"""`recon models list|pin|unpin|rollback`: a model folder's numbered versions and which one runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from recon.runtime.cli.base import Group

FOLDER = click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
EPILOG = """\b
Examples:
  recon models list models/resunet-deblur
  recon models pin models/resunet-deblur 1
  recon models rollback models/resunet-deblur
  recon models unpin models/resunet-deblur"""


@click.group("models", cls=Group, epilog=EPILOG)
def models_group() -> None:
    """Numbered versions of a model (models/NAME/1, 2, ...): list them, pin one, roll back.

    The active version is the pinned one, else the newest verified one (recon verify). Every change is
    one atomic rename: a running host (recon.runtime.LiveModel) switches at its next call.
    """


@models_group.command("list")
@FOLDER
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
def list_command(folder: Path, as_json: bool) -> None:
    """Each version: verified or not, last verification, pinned, active."""
    from recon.runtime.artifact.manifest import ArtifactError
    from recon.runtime.versions import ModelFolder

    models = ModelFolder(folder)
    rows = models.listing()
    try:
        active, why = models.active()
    except ArtifactError as error:
        active, why = None, str(error)
    if as_json:
        click.echo(
            json.dumps({"folder": str(folder), "active": active, "why": why, "versions": rows}, indent=2)
        )
        return
    for row in rows:
        marks = ("active " if row["active"] else "") + ("pinned " if row["pinned"] else "")
        outcome = row["last_outcome"] or "never verified"
        when = f" {row['last_verification']}" if row["last_verification"] else ""
        state = "verified" if row["verified"] else "NOT verified"
        click.echo(f"  {row['version']:>3}  {state:<12} (last check: {outcome}{when})  {marks}".rstrip())
    click.echo(f"active: {active if active is not None else 'none'} ({why})")


@models_group.command("pin")
@FOLDER
@click.argument("version", type=click.IntRange(1))
@click.option("--force", is_flag=True, help="Pin a version that is not verified on this machine.")
def pin_command(folder: Path, version: int, force: bool) -> None:
    """Run VERSION from the next call on, whatever is newer."""
    from recon.runtime.versions import ModelFolder

    ModelFolder(folder).pin(version, force=force)
    click.echo(f"{folder}: version {version} pinned")


@models_group.command("unpin")
@FOLDER
def unpin_command(folder: Path) -> None:
    """Drop the pin: the newest verified version runs."""
    from recon.runtime.versions import ModelFolder

    models = ModelFolder(folder)
    models.unpin()
    click.echo(f"{folder}: unpinned; active: version {models.active()[0]}")


@models_group.command("rollback")
@FOLDER
def rollback_command(folder: Path) -> None:
    """Pin the newest verified version older than the active one (one atomic rename)."""
    from recon.runtime.versions import ModelFolder

    before, after = ModelFolder(folder).rollback()
    click.echo(
        f"{folder}: rolled back from version {before} to {after} (pinned; `recon models unpin` undoes)"
    )
