"""Documented caps on what the runtime will decode or allocate from an untrusted number.

Every reader checks a file's *declared* size (image header, NPY header, DICOM Rows x Columns x frames)
against these caps before it decodes a pixel, and the manifest checker bounds batch and shape entries with
them, so neither a hostile file nor a hostile manifest can make recon allocate more than a few hundred MB.
Hosts that need more may raise them (they are module constants, read at call time).
"""

from __future__ import annotations

# One image side: 8192 px covers CT/MR (512-1024), X-ray (3072) and most microscopy tiles.
MAX_IMAGE_SIDE = 8192
# Pixels per image (or per sinogram): 64 Mpx = 256 MB as float32.
MAX_IMAGE_PIXELS = 8192 * 8192
# Images in one file (TIFF pages, DICOM frames, NPY stacks) and slices in one DICOM series.
MAX_IMAGES_PER_FILE = 4096
# Pixels decoded from one file in total (all pages/frames): 64 Mpx = 256 MB as float32, which recon-run holds
# two of (input and output) at once; with MAX_DECODED_BYTES_PER_FILE it keeps one hostile or oversized file
# under ~1 GB of peak RSS (tests/hardening/test_input_memory.py measures it).
MAX_PIXELS_PER_FILE = 64 * 1024 * 1024
# Bytes decoded from one file (pixels x bytes per stored pixel): 256 MB, e.g. 32 Mpx of float64.
MAX_DECODED_BYTES_PER_FILE = 256 * 1024 * 1024
# Elements walked in one DICOM header (nested ones included): real CT/MR headers hold hundreds to a few
# thousand; pydicom keeps each one it walks.
MAX_DICOM_ELEMENTS = 100_000
# Batch sizes an artifact may declare (min/opt/max of its profile).
MAX_BATCH = 256
# manifest.json itself, and how deeply its JSON may nest (objects/arrays inside each other).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32
# One file of an artifact (ONNX protobufs stop at 2 GiB; TensorRT plans of recon's models are far smaller).
MAX_ARTIFACT_FILE_BYTES = 4 * 1024**3
# Files an artifact may list.
MAX_ARTIFACT_FILES = 64
# Timed runs per recon-bench cell (and untimed warm-up runs): a typo of 10**9 must not run for days.
MAX_BENCH_ITERS = 100_000


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_count(what: str, value: int | None, high: int, why: str, low: int = 1) -> None:
    """Refuse a count outside low..high with one line naming the option and the bound's reason."""
    if value is not None and not low <= value <= high:
        raise ValueError(f"{what} must lie in {low}..{high} ({why}), got {value}")


def check_threads(threads: int | None, what: str = "--threads") -> None:
    """Engine threads: 1 .. the machine's cores (onnxruntime crashes creating 20000 threads; more
    threads than cores only contend)."""
    cores = machine_cores()
    check_count(what, threads, cores, f"this machine gives this process {cores} CPU core(s)")


def check_batch(batch: int | None, what: str = "--batch") -> None:
    """Images per run: 1 .. MAX_BATCH (the largest batch an artifact may declare)."""
    check_count(what, batch, MAX_BATCH, "recon.runtime.limits.MAX_BATCH")
