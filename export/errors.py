"""The one exception type of `recon.export`: a user-facing failure whose message is one clear line."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The export cannot go on; the message says what went wrong and what to do (the CLI prints it as is)."""
