"""The size a compressed DICOM frame declares in its own codestream, checked before it is decoded.

A decoder allocates what the codestream declares, not what the DICOM header's Rows × Columns say (checked
against `recon.runtime.limits` earlier): a 10 KB JPEG 2000 frame can declare 60000² pixels under a header
of 512². The frame's header (JPEG SOFn / JPEG-LS SOF55 marker, JPEG 2000 SIZ marker) is read from its first
bytes, and a frame whose size differs from the header's is refused undecoded. RLE frames decode to exactly
the header's size (pydicom allocates Rows × Columns), so they need no check.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from recon.runtime.io.image_file import ImageIOError

HEAD_BYTES = 64 * 1024  # every frame header sits in the first bytes of the codestream
# JPEG start-of-frame markers (ITU T.81 B.1.1.3: C0-CF except DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (F7)
_SOF = {m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)} | {0xF7}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: markers without a length


def declared_frame_size(head: bytes) -> tuple[int, int] | None:
    """(rows, columns) a JPEG, JPEG-LS or JPEG 2000 codestream declares; None when no header is found."""
    at = head.find(b"\xff\x4f\xff\x51")  # JPEG 2000 SOC + SIZ (ITU T.800 A.5.1), bare or inside a JP2 box
    if at >= 0 and len(head) >= at + 24:
        xsiz, ysiz, x_offset, y_offset = struct.unpack(">IIII", head[at + 8 : at + 24])
        return ysiz - y_offset, xsiz - x_offset
    if head[:2] != b"\xff\xd8":  # JPEG SOI
        return None
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in _SOF:  # length, precision, Y (lines), X (samples per line)
            if i + 9 > len(head):
                return None
            return int.from_bytes(head[i + 5 : i + 7], "big"), int.from_bytes(head[i + 7 : i + 9], "big")
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


def check_frame_size(ds: Any, path: Path, syntax: Any) -> None:
    """Refuse a compressed single-frame dataset whose codestream declares another size than its header."""
    if syntax.name.startswith("RLE"):
        return
    from pydicom.encaps import generate_frames  # pydicom 3.0 encaps.py (skips the basic offset table)

    try:
        head = next(generate_frames(ds.PixelData, number_of_frames=1), b"")[:HEAD_BYTES]
    except Exception as error:  # a damaged item structure
        raise ImageIOError(
            f"{path}: compressed DICOM ({syntax.name!r}) could not be decoded ({error})"
        ) from None
    found = declared_frame_size(head)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if found is None:
        raise ImageIOError(
            f"{path}: compressed DICOM ({syntax.name!r}) could not be decoded (no frame header at the "
            "start of its frame); not decoded"
        )
    if found != (rows, columns):
        raise ImageIOError(
            f"{path}: compressed DICOM ({syntax.name!r}) frame declares {found[0]}×{found[1]} pixels, its "
            f"header Rows × Columns {rows}×{columns}; not decoded"
        )
