"""Trained checkpoints shipped with recon: `<model>-<task>.safetensors` plus a JSON card each."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
