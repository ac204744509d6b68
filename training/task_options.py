"""One option set for the task configuration: recon-train, recon-simulate, recon-eval and recon-export.

    --image-size N  --views A  --detectors D  --detector-spacing S  --task-option KEY=VALUE (repeatable)

Each command keeps its own ``--task``; `task_options` adds the rest and `task_config_from_options` turns
them into a `DeblurTask` / `CTTask` (on top of a base config: the defaults, or the one weights were
trained on), with a one-line error naming the option when a value does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from recon.runtime.artifact.task_config import TaskConfig, task_config

F = TypeVar("F", bound=Callable[..., Any])

# option (click parameter name) -> task config field
_NAMED = {
    "image_size": "image_size",
    "views": "n_views",
    "detectors": "n_detectors",
    "detector_spacing": "detector_spacing",
}
_CT_ONLY = ("views", "detectors", "detector_spacing")


def _square_side(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """--image-size / --size: N, or H,W with H = W (the shared `parse_size`; the task's images are square)."""
    from recon.runtime.cli.base import parse_size

    size = parse_size(ctx, param, value)
    if size is None:
        return None
    if size[0] != size[1]:
        raise click.BadParameter(f"the task's images are square (N×N), got {value!r}")
    if size[0] < 2:
        raise click.BadParameter(f"the image side must be at least 2, got {value!r}")
    return size[0]


def task_options(func: F) -> F:
    """Add the task-configuration options to a click command (the values reach it as keyword arguments)."""
    options = [
        click.option(
            "--image-size",
            "--size",
            "image_size",
            callback=_square_side,
            metavar="N",
            help="Image side N (N×N; --size as on recon-info and recon-bench, square here).",
        ),
        click.option("--views", "--angles", "views", type=click.IntRange(min=1), help="CT: projections."),
        click.option(
            "--detectors", type=click.IntRange(min=1), help="CT: detector bins [ceil(√2·N / spacing)]."
        ),
        click.option("--detector-spacing", type=float, help="CT: detector bin width in image pixels [1]."),
        click.option(
            "--task-option",
            "task_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other task setting (repeatable), e.g. kernel_size=9, angle=20, noise_level=0.02, "
            "filter=hann.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def task_overrides(task: str, kw: dict[str, Any]) -> dict[str, Any]:
    """Remove the task options from a command's keyword arguments; return them as task-config fields
    (for a command that applies them to a base it learns later, e.g. the weights' trained task)."""
    from recon.training.info import parse_overrides

    if task != "ct":
        given = [f"--{name.replace('_', '-')}" for name in _CT_ONLY if kw.get(name) is not None]
        if given:
            raise click.UsageError(f"{'/'.join(given)} apply to --task ct only")
    overrides = parse_overrides(kw.pop("task_option", ()), "--task-option")
    for option, field_name in _NAMED.items():
        value = kw.pop(option, None)
        if value is not None:
            overrides[field_name] = value
    return overrides


def task_config_from_options(task: str, kw: dict[str, Any], base: TaskConfig | None = None) -> TaskConfig:
    """The task configuration a command was given: ``base`` (default: the task's defaults) + its options."""
    overrides = task_overrides(task, kw)
    try:
        return (base if base is not None else task_config(task)).with_overrides(**overrides)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="task options") from None
