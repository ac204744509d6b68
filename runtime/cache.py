"""Where recon keeps its caches (TensorRT engines and timing caches), by the platform's conventions.

- Linux and other Unix: ``$XDG_CACHE_HOME/recon``, or ``~/.cache/recon`` when it is unset or relative (the
  XDG Base Directory spec says to ignore a relative path);
- macOS: ``~/Library/Caches/recon``;
- Windows: ``%LOCALAPPDATA%\\recon\\Cache``.

These are platformdirs' ``user_cache_dir("recon")`` choices, written out so the runtime needs no package for
them. Everything in there may be deleted at any time: it is rebuilt on the next run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def cache_root(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """recon's cache folder on this machine (not created here)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        local = environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "recon" / "Cache"
    if platform == "darwin":
        return Path.home() / "Library" / "Caches" / "recon"
    xdg = environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "recon"
