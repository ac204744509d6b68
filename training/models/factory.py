"""A network from the user's own code: `PACKAGE.MODULE:FACTORY` called with keyword arguments.

The registry (registry.py) is one source of networks, this is another: `recon-train --network` and
`recon-export --network` build from it, and the card / manifest record `factory_config` so that the same
network can be rebuilt (`rebuild`). The contract (docs/your-own-network.md): `FACTORY(**args)` returns a
`torch.nn.Module` mapping a (B, 1, H, W) float32 image to a (B, 1, H, W) float32 image.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
from typing import Any

from torch import nn

FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class FactoryError(ValueError):
    """The factory cannot be imported or called, or does not return a module (one line, for the CLIs)."""


def parse_factory(spec: str) -> tuple[str, str]:
    """'package.module:factory' → (module path, attribute path); FactoryError on another form."""
    if not FACTORY_PATTERN.match(spec or ""):
        raise FactoryError(
            f"--network {spec!r}: expected PACKAGE.MODULE:FACTORY (e.g. monai.networks.nets:BasicUNet)"
        )
    module, attribute = spec.split(":")
    return module, attribute


def network_name(spec: str) -> str:
    """The artifact's model name for a factory: its last attribute, lower case (BasicUNet → basicunet)."""
    return re.sub(r"[^a-z0-9_-]", "", parse_factory(spec)[1].split(".")[-1].lower()) or "network"


def library_of(module_path: str) -> dict[str, str | None]:
    """The installed distribution a factory comes from and its version (None for the user's own code)."""
    top = module_path.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    for name in names:
        try:
            return {"package": top, "distribution": name, "version": importlib.metadata.version(name)}
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"package": top, "distribution": None, "version": None}


def build_from_factory(spec: str, args: dict[str, Any]) -> nn.Module:
    """Import PACKAGE.MODULE, call FACTORY(**args); FactoryError (one line) on each way this can fail."""
    module_path, attribute = parse_factory(spec)
    try:
        target: Any = importlib.import_module(module_path)
    except Exception as error:  # ImportError, or the user's module failing at import time
        raise FactoryError(
            f"--network {spec}: cannot import {module_path} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); is it installed in this environment "
            "(or on PYTHONPATH)?"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise FactoryError(f"--network {spec}: {module_path} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise FactoryError(f"--network {spec}: {attribute} is not callable")
    try:
        network = target(**args)
    except Exception as error:  # wrong or missing arguments, the factory's own validation
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise FactoryError(f"--network {spec}: {attribute}({shown}) failed: {first}") from None
    if not isinstance(network, nn.Module):
        raise FactoryError(
            f"--network {spec}: {attribute}(...) returned {type(network).__name__}, not a torch.nn.Module"
        )
    return network


def factory_config(spec: str, args: dict[str, Any]) -> dict[str, Any]:
    """The manifest's (and card's) model config for a factory network: enough to rebuild it."""
    module_path, _ = parse_factory(spec)
    try:
        json.dumps(args)
    except TypeError as error:
        raise FactoryError(f"--network-arg values must be JSON data: {error}") from None
    return {
        "name": network_name(spec),
        "source": "factory",
        "factory": spec,
        "args": dict(args),
        "library": library_of(module_path),
    }
