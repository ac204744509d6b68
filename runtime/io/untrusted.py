"""One way to render text recon did not write (file names, DICOM tags, manifest strings) for a terminal, a
log or JSON: control characters escaped, so a name holding a newline cannot forge an `error:` line for
another file, nor an escape sequence rewrite the terminal; names that are not UTF-8 (Linux names are bytes)
shown byte for byte instead of failing to print.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: Any) -> str:
    """`text` (str, bytes or a path) printable on one line: control and format characters (C0, DEL, C1,
    bidirectional overrides, line separators) as escapes, undecodable bytes as \\xNN."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    elif isinstance(text, os.PathLike):
        text = os.fsdecode(text)
    else:
        text = str(text)
    if text.isprintable() and text.isascii():  # the common case, checked in C
        return text
    return "".join(_char(c) for c in text)


def _char(c: str) -> str:
    code = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return c
