"""The model registry: families register a class and their presets; `create_model` builds by name.

timm/torchvision habit: one registry, `create_model(name, **overrides)`, `list_models()`. A model's
`.config` is plain JSON data with everything needed to rebuild the same architecture:
`create_model(**model.config)`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

ModelClass = TypeVar("ModelClass", bound=type[nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """A registered family: its class, named presets (hyperparameter dicts) and the default preset."""

    name: str
    cls: type[nn.Module]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_preset: str = "default"

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments and their defaults."""
        params = inspect.signature(self.cls.__init__).parameters
        return {key: p.default for key, p in params.items() if key != "self" and p.kind == p.KEYWORD_ONLY}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, presets: Mapping[str, Mapping[str, Any]] | None = None, default_preset: str = "default"
) -> Callable[[ModelClass], ModelClass]:
    """Class decorator: register a model family under `name`.

    The class takes keyword-only hyperparameters with JSON-friendly defaults. `presets` maps a preset name to
    the hyperparameters it sets; without presets the family has one, "default" (the class defaults).
    """

    def decorator(cls: ModelClass) -> ModelClass:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        preset_table = {key: dict(value) for key, value in (presets or {"default": {}}).items()}
        if default_preset not in preset_table:
            raise ValueError(f"default preset {default_preset!r} of {name!r} not in {list(preset_table)}")
        entry = ModelEntry(name, cls, preset_table, default_preset)
        known = entry.hyperparameters()
        for preset, values in preset_table.items():
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise ValueError(f"preset {name}/{preset} sets unknown hyperparameters {unknown}")
        _REGISTRY[name] = entry
        return cls

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; ValueError listing the available models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def list_presets(name: str) -> list[str]:
    """Preset names of model `name`, the default first."""
    entry = get_entry(name)
    return [entry.default_preset] + [p for p in entry.presets if p != entry.default_preset]


def resolve_config(name: str, *, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The full config `create_model` would build: name, preset, every hyperparameter.

    None-valued overrides are dropped (timm habit), so unset CLI options keep the preset's values.
    """
    entry = get_entry(name)
    preset = entry.default_preset if preset is None else preset
    if preset not in entry.presets:
        available = ", ".join(list_presets(name))
        raise ValueError(f"unknown preset {preset!r} for {name!r}; available: {available}")
    hyperparameters = entry.hyperparameters()
    overrides = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(overrides) - set(hyperparameters))
    if unknown:
        raise ValueError(
            f"{name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(hyperparameters)}"
        )
    values = {**hyperparameters, **entry.presets[preset], **overrides}
    config = {"name": name, "preset": preset, **values}
    try:
        # Round-trip through JSON so that the stored config is exactly what a card or manifest will hold
        # (tuples become lists, and anything unserializable fails here rather than at save time).
        return json.loads(json.dumps(config))
    except TypeError as err:
        raise ValueError(f"config of {name!r} is not JSON-serializable: {err}") from None


def create_model(name: str, *, preset: str | None = None, **overrides: Any) -> nn.Module:
    """Build model `name` from a preset (the family's default when None) and keyword overrides.

    Returns the model with `.config` set; `create_model(**model.config)` rebuilds the same architecture.
    Unknown names, presets or hyperparameters, and bad values, raise ValueError.
    """
    config = resolve_config(name, preset=preset, **overrides)
    hyperparameters = {key: value for key, value in config.items() if key not in ("name", "preset")}
    model = get_entry(name).cls(**hyperparameters)
    model.config = config
    return model
