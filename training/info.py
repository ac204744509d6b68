"""`recon-info MODEL`: parameters, receptive field and FLOPs of a registered model."""

from __future__ import annotations

import json
from typing import Any

import click

from recon.runtime.cli.base import Command, parse_size

EXAMPLES = """\b
Examples:
  recon-info                          list the models and their presets
  recon-info cnn                      SimpleCNN: 38,145 parameters, receptive field 7
  recon-info resunet --preset paper   the course's c0 = 64 Residual UNet
  recon-info resunet --size 512 --json          # or --size 512,384
  recon-info resunet --set attention=true --set c0=32
  recon-info unet --layers            the receptive field layer by layer

\b
Receptive field: the course's formula r_l = r_(l-1) + (k_l - 1) * prod(s_i, i < l)
along the longest path; for UNets that is the encoder down through the bottleneck
and back up the decoder (skips only add shorter paths); upsampling by s counts as
stride 1/s. Transformers report "global". FLOPs: conv / linear / matmul
multiply-accumulates x 2 for one image (torch FlopCounterMode); element-wise ops
are not counted.

"""


def parse_overrides(items: tuple[str, ...], option: str = "--set") -> dict[str, Any]:
    """KEY=VALUE pairs; values parse as JSON (32, true, "gelu") and fall back to plain strings (gelu)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text  # a bare word: a string option such as kind=gaussian
    return overrides


def format_count(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def list_text() -> str:
    from recon.training.models import get_entry, list_models, list_presets

    lines = ["models (presets, default first):"]
    for name in list_models():
        summary = (get_entry(name).cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<8} {', '.join(list_presets(name)):<16} {summary}")
    return "\n".join(lines)


def report_text(summary: dict[str, Any], layers: list[tuple[Any, int]] | None) -> str:
    config = summary["config"]
    height, width = summary["size"]
    field = summary["receptive_field"]
    lines = [
        f"model            {config['name']} (preset {config['preset']})",
        f"parameters       {summary['parameters']:,} ({summary['float32_bytes'] / 2**20:.2f} MiB as float32)",
        "receptive field  "
        + (
            f"{field} px (longest path, course formula)"
            if field is not None
            else summary["receptive_field_note"]
        ),
        f"FLOPs            {format_count(summary['flops'], 'FLOP')} at {height}x{width}, batch 1",
        "config           " + json.dumps(config),
    ]
    if layers:
        lines.append("receptive field by layer (kernel, stride, field):")
        lines += [f"  {layer.name:<16} k={layer.kernel:<2} s={layer.stride:<5g} r={r}" for layer, r in layers]
    return "\n".join(lines)


@click.command(cls=Command, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False)
@click.option("--preset", "-p", default=None, help="Named preset (default: the family's default).")
@click.option(
    "--size",
    default="256",
    show_default=True,
    callback=parse_size,
    metavar="H,W",
    help="Image size for the FLOP count: N (N×N) or H,W, as on recon-bench.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a hyperparameter.")
@click.option("--layers", is_flag=True, help="Also print the receptive field layer by layer.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def main(
    model: str | None,
    preset: str | None,
    size: tuple[int, int],
    overrides: tuple[str, ...],
    layers: bool,
    as_json: bool,
) -> None:
    """Print parameters, receptive field and FLOPs of MODEL (no MODEL: list the models)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:  # the base install carries recon.training, not torch
        raise click.ClickException("recon info needs the training extra (torch): `pip install recon[train]`")
    # torch is imported here so that `--help` stays fast.
    import torch

    from recon.training.models import (
        create_model,
        list_models,
        list_presets,
        receptive_field_table,
        summarize,
    )
    from recon.training.models.summary import receptive_field_layers

    if model is None:
        if as_json:
            click.echo(json.dumps({name: list_presets(name) for name in list_models()}, indent=2))
        else:
            click.echo(list_text())
        return
    try:
        # Built on the meta device: shapes only, so even the 56 M-parameter preset costs nothing.
        with torch.device("meta"):
            network = create_model(model, preset=preset, **parse_overrides(overrides))
        summary = summarize(network, size)
        path = receptive_field_layers(network)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(report_text(summary, receptive_field_table(path) if layers and path else None))


if __name__ == "__main__":
    main()
