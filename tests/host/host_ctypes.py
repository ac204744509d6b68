"""The C host library (host/include/recon/recon.h) from Python through ctypes: what a C#, Java or Rust host
does through its own foreign-function interface, here used to compare the C++ host with recon.runtime."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STATUS = {
    0: "ok",
    1: "artifact",
    2: "backend",
    3: "input",
    4: "option",
    5: "closed",
    6: "argument",
    7: "internal",
}
DTYPES = {
    np.dtype(np.float32): 0,
    np.dtype(np.float64): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.uint16): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.uint32): 6,
    np.dtype(np.int32): 7,
}


class Options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("threads", ctypes.c_int32),
        ("precision", ctypes.c_char_p),
        ("clip", ctypes.c_int32),
        ("consistency", ctypes.c_int32),
        ("tile", ctypes.c_int32),
        ("overlap", ctypes.c_int32),
        ("blend", ctypes.c_char_p),
    ]


class HostError(Exception):
    """A non-OK status: `kind` names it (artifact, backend, input, ...), the message is the library's."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class HostScore:
    residual: float
    flagged: bool
    reasons: list[str] = field(default_factory=list)
    statistics: dict[str, float] = field(default_factory=dict)


def load_library(build: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build / "librecon_host.so"))
    p = ctypes.POINTER
    lib.recon_last_error.restype = ctypes.c_char_p
    lib.recon_version.restype = ctypes.c_char_p
    lib.recon_options_init.argtypes = [p(Options)]
    lib.recon_open.argtypes = [ctypes.c_char_p, p(Options), p(ctypes.c_void_p)]
    lib.recon_verify.argtypes = [ctypes.c_char_p]
    lib.recon_close.argtypes = [ctypes.c_void_p]
    lib.recon_run.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        p(ctypes.c_int64),
        ctypes.c_int32,
        p(ctypes.c_void_p),
    ]
    lib.recon_result_images.argtypes = [
        ctypes.c_void_p,
        p(p(ctypes.c_float)),
        p(ctypes.c_int64),
        p(ctypes.c_int32),
    ]
    lib.recon_result_score_count.argtypes = [ctypes.c_void_p]
    lib.recon_result_score_count.restype = ctypes.c_int64
    lib.recon_result_score.argtypes = [ctypes.c_void_p, ctypes.c_int64, p(ctypes.c_double), p(ctypes.c_int32)]
    lib.recon_result_reasons.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.recon_result_reasons.restype = ctypes.c_char_p
    lib.recon_result_statistic.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_char_p,
        p(ctypes.c_double),
    ]
    lib.recon_result_free.argtypes = [ctypes.c_void_p]
    lib.recon_size_plan.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    lib.recon_size_plan.restype = ctypes.c_char_p
    lib.recon_verify_golden.argtypes = [
        ctypes.c_void_p,
        p(ctypes.c_int32),
        p(ctypes.c_double),
        p(ctypes.c_double),
        p(ctypes.c_char_p),
    ]
    return lib


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise HostError(STATUS.get(status, str(status)), lib.recon_last_error().decode())


def verify(lib: ctypes.CDLL, artifact: Path) -> None:
    _check(lib, lib.recon_verify(str(artifact).encode()))


class Host:
    """One opened artifact (recon_open … recon_close)."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        artifact: Path,
        *,
        threads: int = 1,
        precision: str | None = None,
        clip: bool | None = None,
        consistency: bool = True,
        tile: int | None = None,
        overlap: int | None = None,
        blend: str | None = None,
    ) -> None:
        self.lib = lib
        options = Options()
        lib.recon_options_init(ctypes.byref(options))
        options.threads = threads
        options.precision = precision.encode() if precision else None
        options.clip = -1 if clip is None else int(clip)
        options.consistency = int(consistency)
        options.tile = tile or 0
        options.overlap = -1 if overlap is None else overlap
        options.blend = blend.encode() if blend else None
        handle = ctypes.c_void_p()
        _check(lib, lib.recon_open(str(artifact).encode(), ctypes.byref(options), ctypes.byref(handle)))
        self.handle = handle

    def verify_golden(self) -> tuple[bool, float, float, str]:
        """recon_verify_golden: (passed, max |error|, PSNR dB, the one-line report)."""
        passed, line = ctypes.c_int32(), ctypes.c_char_p()
        max_abs, psnr = ctypes.c_double(), ctypes.c_double()
        outputs = [ctypes.byref(v) for v in (passed, max_abs, psnr, line)]
        _check(self.lib, self.lib.recon_verify_golden(self.handle, *outputs))
        return bool(passed.value), max_abs.value, psnr.value, line.value.decode()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, list[HostScore]]:
        images = np.ascontiguousarray(images)
        shape = (ctypes.c_int64 * images.ndim)(*images.shape)
        result = ctypes.c_void_p()
        status = self.lib.recon_run(
            self.handle, images.ctypes.data, DTYPES[images.dtype], shape, images.ndim, ctypes.byref(result)
        )
        _check(self.lib, status)
        try:
            data = ctypes.POINTER(ctypes.c_float)()
            out_shape = (ctypes.c_int64 * 4)()
            rank = ctypes.c_int32()
            _check(
                self.lib,
                self.lib.recon_result_images(result, ctypes.byref(data), out_shape, ctypes.byref(rank)),
            )
            dims = tuple(out_shape[: rank.value])
            output = np.ctypeslib.as_array(data, shape=dims).copy()
            scores = []
            for i in range(self.lib.recon_result_score_count(result)):
                residual, flagged = ctypes.c_double(), ctypes.c_int32()
                _check(
                    self.lib,
                    self.lib.recon_result_score(result, i, ctypes.byref(residual), ctypes.byref(flagged)),
                )
                reasons = self.lib.recon_result_reasons(result, i).decode()
                scores.append(
                    HostScore(residual.value, bool(flagged.value), reasons.split("; ") if reasons else [])
                )
            return output, scores
        finally:
            self.lib.recon_result_free(result)

    def statistic(self, images: np.ndarray, name: str) -> list[float]:
        """One statistic of every image (through recon_result_statistic)."""
        images = np.ascontiguousarray(images, np.float32)
        shape = (ctypes.c_int64 * images.ndim)(*images.shape)
        result = ctypes.c_void_p()
        _check(
            self.lib,
            self.lib.recon_run(self.handle, images.ctypes.data, 0, shape, images.ndim, ctypes.byref(result)),
        )
        try:
            values = []
            for i in range(self.lib.recon_result_score_count(result)):
                value = ctypes.c_double()
                _check(
                    self.lib, self.lib.recon_result_statistic(result, i, name.encode(), ctypes.byref(value))
                )
                values.append(value.value)
            return values
        finally:
            self.lib.recon_result_free(result)

    def size_plan(self, height: int, width: int) -> str:
        return self.lib.recon_size_plan(self.handle, height, width).decode()

    def close(self) -> None:
        if self.handle:
            self.lib.recon_close(self.handle)
            self.handle = None

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
