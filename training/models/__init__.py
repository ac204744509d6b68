"""recon's model zoo: a registry of reconstruction networks, (B, C, H, W) → (B, C, H, W) for any H, W.

>>> from recon.training.models import create_model, list_models
>>> model = create_model("resunet", preset="small")
>>> rebuilt = create_model(**model.config)
"""

from __future__ import annotations

# Importing the family modules registers them.
from . import cnn, resunet, unet, vit  # noqa: F401
from .receptive_field import RFLayer, receptive_field, receptive_field_table
from .registry import create_model, get_entry, list_models, list_presets, register_model, resolve_config
from .summary import count_flops, count_parameters, model_receptive_field, summarize

__all__ = [
    "RFLayer",
    "count_flops",
    "count_parameters",
    "create_model",
    "get_entry",
    "list_models",
    "list_presets",
    "model_receptive_field",
    "receptive_field",
    "receptive_field_table",
    "register_model",
    "resolve_config",
    "summarize",
]
