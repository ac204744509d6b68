"""Rule 2: memory is bounded before any pixel is decoded; Rule 3 for TIFF: every page, or the file refused.

Hostile files declare far more pixels than they hold (a tiled TIFF of 40000², a PNG header of 60000², an
NPY header of 10**6 images): each is refused from its header, with one line naming the file and the limit,
before a byte of pixels is allocated. The peak RSS of a whole `recon-run` process on each is measured.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from runtime_artifacts import H, W

from recon.runtime.io.imageio import ImageIOError, read_image

BIN = Path(sys.executable).parent


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width × height 8-bit grayscale, with one tiny compressed IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def tiled_tiff(path: Path, side: int) -> Path:
    """A tiled, deflated uint16 TIFF declaring side × side pixels: a few MB on disk, side² × 2 B decoded."""
    import tifffile

    tile = np.zeros((256, 256), np.uint16)
    tiles = (tile for _ in range(((side + 255) // 256) ** 2))
    tifffile.imwrite(
        path, tiles, shape=(side, side), dtype=np.uint16, tile=(256, 256), compression="zlib",
        photometric="minisblack",
    )  # fmt: skip
    return path


def npy_header_only(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), dtype))
    header["shape"] = shape
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 4096)
    return path


HOSTILE = {
    "tiff-20000": (lambda p: tiled_tiff(p / "big.tif", 20000), r"TIFF declares 1 image\(s\) of 20000×20000"),
    "png-60000": (
        lambda p: png_header_only(p / "big.png", 60000, 60000),
        r"PNG declares 1 image\(s\) of 60000",
    ),
    "png-9000x9000": (lambda p: png_header_only(p / "wide.png", 9000, 9000), r"a side above 8192"),
    "npy-stack": (
        lambda p: npy_header_only(p / "stack.npy", (10**6, 512, 512)),
        r"NPY declares 1000000 image",
    ),
    "npy-float64": (lambda p: npy_header_only(p / "f64.npy", (200, 512, 512), "<f8"), r"bytes of pixels"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_file_declaring_too_many_pixels_is_refused_from_its_header(tmp_path, case):
    make, expected = HOSTILE[case]
    path = make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning included
        with pytest.raises(ImageIOError, match=rf"{path.name}: .*{expected}.*not decoded"):
            read_image(path)


def peak_rss_mb(*args: object) -> tuple[float, subprocess.CompletedProcess]:
    """recon-run in a child process; its peak RSS (ru_maxrss of the waited-for child) in MB."""
    code = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
        "print(r.returncode)\n"
        "sys.stderr.write(r.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(BIN / "recon-run"), *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    rss, returncode = result.stdout.split()
    return float(rss), subprocess.CompletedProcess(args, int(returncode), "", result.stderr)


@pytest.mark.slow
def test_recon_run_on_each_hostile_file_stays_under_1_gb(hardening_artifacts, tmp_path):
    for case, (make, _) in sorted(HOSTILE.items()):
        folder = tmp_path / case
        folder.mkdir()
        path = make(folder)
        rss, result = peak_rss_mb(hardening_artifacts["conv"], path, "--out", tmp_path / "out" / case)
        print(f"{case}: peak RSS {rss:.0f} MB, exit {result.returncode}")
        assert result.returncode == 1 and "not decoded" in result.stderr, result.stderr
        assert rss < 1024, f"{case}: peak RSS {rss:.0f} MB"


@pytest.mark.slow
def test_recon_run_on_the_largest_accepted_stack_stays_under_1_gb(hardening_artifacts, tmp_path):
    from recon.runtime import limits

    # as many images of the artifact's size as one file may hold: all decoded, run and written
    n = min(limits.MAX_IMAGES_PER_FILE, limits.MAX_DECODED_BYTES_PER_FILE // (H * W * 8))
    np.save(tmp_path / "stack.npy", np.zeros((n, H, W), np.float64))
    rss, result = peak_rss_mb(hardening_artifacts["conv"], tmp_path / "stack.npy", "--out", tmp_path / "o")
    print(f"largest accepted stack ({n}×{H}×{W} float64): peak RSS {rss:.0f} MB")
    assert result.returncode == 0, result.stderr
    assert rss < 1024


# -- TIFF: every page or none -----------------------------------------------------------------------------
def test_a_tiff_page_stored_differently_is_read_with_the_others(tmp_path):
    import tifffile

    pages = np.random.default_rng(0).integers(0, 65535, (3, H, W), dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        for i, page in enumerate(pages):  # the middle page compressed: tifffile files it as another series
            tif.write(page, photometric="minisblack", compression="zlib" if i == 1 else None)
    assert len(tifffile.TiffFile(tmp_path / "mixed.tif").series) > 1
    np.testing.assert_array_equal(read_image(tmp_path / "mixed.tif").data, pages)


def test_a_tiff_with_pages_of_two_sizes_is_refused_not_cut(tmp_path):
    import tifffile

    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(np.zeros((H, W), np.uint16), photometric="minisblack")
        tif.write(np.zeros((H // 2, W // 2), np.uint16), photometric="minisblack")
    with pytest.raises(
        ImageIOError, match=r"two.tif: TIFF pages of different shapes or types \(8×8 uint16, "
    ):
        read_image(tmp_path / "two.tif")


def test_recon_run_writes_every_page_of_a_mixed_tiff(hardening_artifacts, tmp_path):
    import tifffile

    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        for i in range(3):
            tif.write(np.full((H, W), i * 1000, np.uint16), photometric="minisblack",
                      compression="zlib" if i == 1 else None)  # fmt: skip
    result = subprocess.run(
        [str(BIN / "recon-run"), str(hardening_artifacts["conv"]), str(tmp_path / "mixed.tif"), "--out",
         str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert tifffile.imread(tmp_path / "o" / "mixed.tif").shape == (3, H, W)


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "scan.npy")
    with pytest.raises(ImageIOError, match=r"scan.npy: is not a regular file"):
        read_image(tmp_path / "scan.npy")
