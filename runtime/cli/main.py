"""recon-run, recon-bench and `recon {run,bench,inspect,...}`: the entry points.

The commands live in `run_cli.py` and `bench_cli.py`; their shared error handling in `cli_base.py`. Other
installed parts add `recon` subcommands through the "recon.commands" entry points (`plugins.py`): training
registers `recon info`, so the runtime never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from recon.runtime import plugins
from recon.runtime.cli.base import Command, Group
from recon.runtime.cli.bench import bench_command
from recon.runtime.cli.models import models_group
from recon.runtime.cli.run import collect_inputs, plan_outputs, run_command
from recon.runtime.cli.verify import verify_command

__all__ = [
    "bench_command",
    "bench_main",
    "collect_inputs",
    "inspect_command",
    "main",
    "plan_outputs",
    "run_command",
    "run_main",
]


# -- recon inspect -------------------------------------------------------------------------------------------
@click.command(
    "inspect",
    cls=Command,
    epilog="\b\nExamples:\n  recon inspect artifacts/resunet-deblur\n"
    "  recon inspect artifacts/resunet-deblur --json",
)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every file's sha256.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and the check as JSON.")
def inspect_command(artifact: Path, verify: bool, as_json: bool) -> None:
    """Summarise an artifact's manifest and check its files."""
    from recon.runtime.artifact.manifest import load_manifest

    manifest = load_manifest(artifact, verify=verify)
    if as_json:
        click.echo(
            json.dumps(
                {"artifact": str(artifact), "verified": verify, "manifest": manifest.to_json()}, indent=2
            )
        )
        return
    m = manifest
    click.echo(
        f"{m.name}  (task {m.task}, model {m.model.get('name')}, format v{m.format_version}, "
        f"recon {m.recon_version})"
    )
    for side in ("input", "output"):
        spec = getattr(m, side)
        value_range = None if spec.value_range is None else list(spec.value_range)
        click.echo(
            f"  {side:<7} {spec.name}: {list(spec.shape)} {spec.dtype}"
            f"  range {value_range}" + ("  clipped" if spec.clip else "")
        )
    click.echo(f"  batch   min {m.batch.min}, opt {m.batch.opt}, max {m.batch.max}")
    if m.spatial:  # images of any size (recon.runtime.artifact.spatial)
        s = m.spatial
        taken = f"whole {s.min}..{s.max} px, tiled above" if s.whole_image else "tiled only"
        click.echo(f"  sizes   {taken}; tiles {s.tile}², overlap {s.overlap} px, {s.blend}")
    for name, entry in m.files.items():
        trt = entry.tensorrt or {}
        extra = (
            f"  TensorRT {trt.get('version')} sm {trt.get('compute_capability')}"
            + (" version-compatible" if trt.get("version_compatible") else "")
            if trt.get("version")  # an ONNX file's entry holds only the TensorRT provider's profile
            else ""
        )
        click.echo(
            f"  {name:<18} {entry.kind:<9} {entry.precision or '':<5} {entry.size:>12,d} B  "
            f"sha256 {entry.sha256[:12]}…{extra}"
        )
    if m.parity is not None:
        click.echo(f"  parity  {'passed' if m.parity.get('passed') else 'FAILED'}")
    for line in qualification_lines(m):
        click.echo("  " + line)
    click.echo("  files verified (sha256)" if verify else "  files not verified (--no-verify)")


def qualification_lines(m: Any) -> list[str]:
    """The golden set and the lineage (format v3), as a reviewer reads them; older artifacts say so."""
    if m.golden is None and m.lineage is None:
        return [f"golden  none (format v{m.format_version}): re-export to qualify it with recon verify"]
    lines = []
    if m.golden is not None:
        tolerances = ", ".join(
            f"{key} ≤ {t.get('max_abs', float('nan')):.2g}"
            for key, t in m.golden.get("tolerances", {}).items()
        )
        lines.append(
            f"golden  {m.golden.get('inputs')} → {m.golden.get('outputs')}; max |error|: {tolerances}"
        )
    lineage = m.lineage or {}
    git = lineage.get("git") or {}
    weights = lineage.get("weights") or {}
    data = lineage.get("training_data") or {}
    if lineage:
        commit = (
            f"git {git.get('commit', '')[:12]}" + (" (modified)" if git.get("dirty") else "")
            if git
            else "no git"
        )
        lines += [
            f"made by recon {lineage.get('recon_version')}, {commit}, at {lineage.get('exported_at')}",
            f"weights {weights.get('source')} {weights.get('file') or ''} "
            f"sha256 {(weights.get('sha256') or '-')[:12]}",
            "data    " + (f"{data.get('source')}; held out: {', '.join(data.get('heldout_images') or [])}"
                          if data else "no training data card (random init or a card without 'data')"),
            "libs    " + ", ".join(f"{k} {v}" for k, v in (lineage.get("libraries") or {}).items()),
            f"on      {(lineage.get('exported_on') or {}).get('cpu')}",
        ]  # fmt: skip
    return lines


class PluginGroup(Group):
    """The `recon` group: its own commands, then those registered as "recon.commands" (loaded when used)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(plugins.registered(plugins.COMMANDS)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in plugins.registered(plugins.COMMANDS):
            return command
        loaded = plugins.load(plugins.COMMANDS, name, f"recon {name} cannot be loaded")
        if not isinstance(loaded, click.Command):
            raise plugins.PluginError(f"recon {name}: the registered entry point is not a click command")
        return loaded


@click.group(
    "recon",
    cls=PluginGroup,
    epilog="\b\nExamples:\n  recon inspect artifacts/resunet-deblur\n"
    "  recon run artifacts/resunet-deblur blurred/ --out restored/\n"
    "  recon bench artifacts/resunet-deblur --batch 1,8\n"
    "  recon info resunet --size 256",
)
def main() -> None:
    """recon's runtime: run, benchmark and inspect exported artifacts (and describe models)."""


main.add_command(run_command)
main.add_command(bench_command)
main.add_command(inspect_command)
main.add_command(verify_command)
main.add_command(models_group)

run_main = run_command
bench_main = bench_command
