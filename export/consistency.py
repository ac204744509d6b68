"""The data-consistency check: a companion graph `consistency.onnx` and its calibration at export.

The graph takes the runtime's output x̂ (after clipping) and the measurement y exactly as fed to the network,
and returns one row of statistics per image (names in `ConsistencyCheck.statistics`, a subset of `CHECKS`):

- `residual`: r = ‖A(x̂) − y‖ / ‖y‖, A the task's forward operator. Deblur: the blur (a conv, any H×W).
  CT: a ray-driven (Joseph) projector written with gathers, no FFT, no GridSample, FP32, run on a
  `factor`-times coarser grid (x̂ average-pooled, y's detector bins averaged in groups of `factor`): a full
  resolution Radon transform costs more than the network it checks (ScatterElements in ONNX Runtime: 130 ms
  per image; gathers over 5.6 M ray samples: ~40 ms), the coarse one a few ms, and the inconsistencies it
  must see (missing views, detector gains, noise, another object) are not fine-detail effects.
- deblur `residual_lowpass`: the same after a 5×5 mean of A(x̂) − y. In-distribution the residual is
  mostly the measurement's white noise, which the mean divides by ~5; a wrong blur leaves a structured
  residual (edges) that survives it, so this separates another blur from in-distribution far better.
- `noise`: median |high-pass| / rms(y): a robust input-noise estimate. Deblur: the difference along the
  motion line of the residual A(x̂) − y (A(x̂) is smooth along the line, so what remains is the white noise;
  y itself carries as much texture as 1% noise), the Laplacian for other kernels; CT: the second difference
  of y along the detector (sinograms are smooth). Both tasks' noise is relative to ‖y‖, so in-distribution
  it sits in a narrow band.
- `mean`, `min`, `max`: the measurement's level; catches an image in other units that still passes the
  runtime's range check (12-bit data in a 16-bit container, [-1, 1] scaling, a sinogram in mm⁻¹).
- CT `view_spread`: (max − min) / mean of the per-view sums Σ_d y[a, d]. In parallel-beam CT every view
  integrates the same total mass (the zeroth Helgason-Ludwig condition), so a dropped view or a view-wise
  gain jump shows here even when the network paints over it.
- `clipped_high`: the fraction of x̂ pixels at the top of the output range (saturated outputs).
- deblur with a motion kernel, `blur_spectrum`: the blur's fingerprint in y's spectrum along the motion. A
  motion blur of L taps multiplies the spectrum along its line by |sin(πLf) / (L sin(πf))|², zero at f = j/L:
  there only the noise is left, whatever the image. The log power of y's derivative along the motion at 2L
  frequencies f = j/(4L) (Hann-windowed sums over 10·L samples, on a grid of positions), relative to y's
  mean square, forms a profile; `blur_spectrum` is its Mahalanobis distance to the calibration set's
  profiles (mean and covariance fitted at export). Another length, shape or direction of blur moves the
  zeros or fills them; more noise lifts the floor. The image's own spectrum is smooth in f and varies along
  directions the covariance learns, so other content stays inside (docs/reliability.md measures both).
  Images shorter along the motion than the window plus margins have no profile and score 0 (not judged).

Calibration: the same statistics on in-distribution data, run through the runtime exactly as deployed; each
statistic gets the interval it must stay in (see `bounds`), written into the manifest's "consistency" entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recon.export.errors import ExportError

if TYPE_CHECKING:
    from recon.runtime.artifact.manifest import Manifest
    from recon.runtime.artifact.task_config import TaskConfig

FILE_NAME = "consistency.onnx"
IMAGE_NAME, MEASUREMENT_NAME, SCORES_NAME = "image", "measurement", "scores"

# statistic -> the side(s) checked against the calibrated range
CHECKS: dict[str, dict[str, str]] = {
    "deblur": {
        "residual": "upper",
        "residual_lowpass": "upper",
        "noise": "upper",
        "mean": "both",
        "min": "lower",
        "max": "both",
        "clipped_high": "upper",
        "blur_spectrum": "upper",
    },
    "ct": {
        "residual": "upper",
        "noise": "upper",
        "mean": "both",
        "min": "lower",
        "max": "both",
        "view_spread": "upper",
        "clipped_high": "upper",
    },
}
PERCENTILES = (0, 1, 5, 50, 95, 99, 99.9, 100)
# Interval rule: [min / MARGIN, max * MARGIN] of the calibration set (mirrored for negative values), plus
# SLACK for fractions that are often exactly zero. MARGIN was chosen on the measurements in
# docs/reliability.md (bench/consistency.py): 0 of 32 held-out and ≤ 1% of a fresh 500-set flagged.
MARGIN = 1.25
SLACK = {"clipped_high": 0.01}
RULE = (
    "flag an image when any statistic leaves its interval; interval = [low, high] of the calibration set "
    "widened by the margin (low / margin, high * margin; mirrored for negative values) plus slack, on the "
    "checked side(s)"
)
CALIBRATION_STREAM = 3  # recon.training.data seed streams 0-2 are train / validation / held-out
EVALUATION_STREAM = 4  # a second fresh in-distribution set, for measuring false alarms


# -- the graph ------------------------------------------------------------------------------------------
class JosephProjector(nn.Module):
    """Parallel-beam line integrals of (B, 1, N, N) images on an f-times coarser grid: (B, 1, A, D // f).

    Same geometry as `recon.training.physics.radon` (rotation centre N // 2, detector bin D // 2, angle a at
    a·range/A): detector group g averages bins f·g … f·g+f−1. Joseph's method: a ray steps through the image
    one row (or column, for rays closer to horizontal) at a time and interpolates linearly within it; the
    two sample positions per step come from two gathers, with coordinates computed from the angles' cos/sin.
    """

    def __init__(
        self,
        image_size: int,
        n_angles: int,
        n_detectors: int,
        angle_range: float,
        factor: int,
        spacing: float = 1.0,
    ) -> None:
        super().__init__()
        if image_size % factor:
            raise ExportError(f"consistency: image size {image_size} is not a multiple of {factor}")
        self.image_size, self.n_angles, self.n_detectors = image_size, n_angles, n_detectors
        self.spacing = float(spacing)  # detector bin width in image pixels
        self.factor, self.n_groups = factor, n_detectors // factor
        theta = np.arange(n_angles) * (angle_range / n_angles)
        steep = np.abs(np.cos(theta)) >= np.abs(np.sin(theta))  # ray closer to vertical: step by rows
        self.rows_angles = [float(t) for t in theta[steep]]
        self.cols_angles = [float(t) for t in theta[~steep]]
        order = np.concatenate([np.flatnonzero(steep), np.flatnonzero(~steep)])
        self.register_buffer("inverse_order", torch.from_numpy(np.argsort(order)).long(), persistent=False)

    def _project(self, planes: torch.Tensor, angles: list[float], by_rows: bool) -> torch.Tensor:
        """planes (B, n, n) stepped along axis 1: (B, len(angles), n_groups)."""
        batch, n = planes.shape[0], planes.shape[1]
        f, half_n, half_d = self.factor, self.image_size // 2, self.n_detectors // 2
        theta = torch.tensor(angles, dtype=torch.float32)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # by rows: column c = (t + v·sin) / cos; by columns: row r = (v·cos − t) / sin (fine-pixel units)
        s1, s2, s3 = (1.0, sin, cos) if by_rows else (-1.0, cos, sin)
        # detector group centres, in pixels from the rotation axis
        t = (torch.arange(self.n_groups, dtype=torch.float32) * f + (f - 1) / 2 - half_d) * self.spacing
        v = torch.arange(n, dtype=torch.float32) * f + (f - 1) / 2 - half_n  # coarse pixel centres
        pos = (s1 * t[None, :, None] + v[None, None, :] * s2[:, None, None]) / s3[:, None, None]
        j = (pos + half_n - (f - 1) / 2) / f  # (A_g, G, n) continuous coarse index within the step's line
        left = torch.floor(j)
        frac = (j - left).reshape(1, -1)
        line = torch.arange(n, dtype=torch.int64) * (n + 3)
        index = (left.clamp(-2, n).to(torch.int64) + 2 + line).reshape(-1)
        padded = F.pad(planes, (2, 2))  # (B, n, n + 4): reads off the image see zeros
        value = padded[..., :-1].reshape(batch, -1)
        slope = (padded[..., 1:] - padded[..., :-1]).reshape(batch, -1)
        # index_select (ONNX Gather, 1-D indices shared by the batch): GatherElements would need the
        # indices expanded to the batch at every run, which cost more than the gathers themselves
        samples = value.index_select(1, index) + slope.index_select(1, index) * frac
        step = (f / s3.abs()).reshape(1, -1, 1)  # ray length per coarse row/column, in fine pixels
        return samples.reshape(batch, len(angles), self.n_groups, n).sum(-1) * step

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        coarse = F.avg_pool2d(image, self.factor)[:, 0] if self.factor > 1 else image[:, 0]
        parts = []
        if self.rows_angles:
            parts.append(self._project(coarse, self.rows_angles, by_rows=True))
        if self.cols_angles:
            parts.append(self._project(coarse.transpose(1, 2), self.cols_angles, by_rows=False))
        sino = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return sino.index_select(1, self.inverse_order)[:, None]

    def bin_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, 1, A, D) averaged over the detector groups the projector samples: (B, 1, A, D // f)."""
        f, g = self.factor, self.n_groups
        if f == 1:
            return y
        return y[..., : g * f].reshape(y.shape[0], 1, self.n_angles, g, f).mean(-1)


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _shifted_difference(t: torch.Tensor, step: tuple[int, int]) -> torch.Tensor:
    """t(p + step) − t(p) over the positions where both lie inside the image."""
    dr, dc = step
    rows = (slice(dr, None), slice(None, -dr or None)) if dr >= 0 else (slice(None, dr), slice(-dr, None))
    cols = (slice(dc, None), slice(None, -dc or None)) if dc >= 0 else (slice(None, dc), slice(-dc, None))
    return t[..., rows[0], cols[0]] - t[..., rows[1], cols[1]]


def _box5(t: torch.Tensor) -> torch.Tensor:
    """5×5 mean over the valid part, as two 1-D passes of shifted slices (an AveragePool of 5×5 on one
    channel cost OpenVINO 3x these)."""
    rows = t[..., :-4, :] + t[..., 1:-3, :] + t[..., 2:-2, :] + t[..., 3:-1, :] + t[..., 4:, :]
    return (rows[..., :-4] + rows[..., 1:-3] + rows[..., 2:-2] + rows[..., 3:-1] + rows[..., 4:]) / 25


def _median_abs(t: torch.Tensor) -> torch.Tensor:
    """Per image, the median of |t| over every 8th row and column (TopK: ONNX has no median; the
    subsample keeps it cheap: ~1000 samples of a 256² image, the median within a few %, far inside the
    calibrated margin). Robust to the edges and dots that dominate a mean."""
    flat = _per_image(t[..., ::8, ::8]).abs()
    k = flat.shape[1] // 2 + 1
    return torch.topk(flat, k, dim=1, largest=False).values.amax(1)


def _rms(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.mean(_per_image(t) ** 2, dim=1))


class BlurSpectrum(nn.Module):
    """y (B, 1, H, W) -> the Mahalanobis distance of its along-motion spectral profile (see module doc).

    `features` gives the profile (B, F); `fit` sets the calibration mean and whitening, after which
    `forward` returns the distance (B,). All in slices, one MatMul and reductions: any H × W, cheap in any
    backend.
    """

    def __init__(self, step: tuple[int, int], taps: int, border: int, calibration_side: int) -> None:
        super().__init__()
        self.step, self.taps, self.border = step, taps, border
        # window positions every `stride` rows and columns: 8 at 256² (the windows overlap; 4 did no
        # better), finer for small images so that a profile still averages many windows
        self.stride = 8 if calibration_side >= 256 else 4 if calibration_side >= 128 else 2
        # the window: 10 blur lengths where the calibration images allow (≥ 8 positions a side), 3 at least
        room = calibration_side - 2 * border - 1 - 8 * self.stride
        self.periods = int(min(10, max(3, room // taps)))
        self.window = taps * self.periods
        freqs = np.arange(1, 2 * taps + 1) / (4 * taps)  # up to 0.5 cycles per step
        k = np.arange(self.window)
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * (k + 0.5) / self.window)
        basis = np.concatenate(
            [hann[:, None] * np.cos(2 * np.pi * freqs[None] * k[:, None]),
             hann[:, None] * np.sin(2 * np.pi * freqs[None] * k[:, None])], axis=1,
        )  # fmt: skip
        self.n_freqs = len(freqs)
        self.register_buffer("basis", torch.from_numpy(basis / np.sqrt((hann**2).sum())).float())
        self.register_buffer("mean", torch.zeros(self.n_freqs))
        self.register_buffer("whitening", torch.eye(self.n_freqs))

    def features(self, y: torch.Tensor) -> torch.Tensor:
        """(B, F) log10 power profiles; NaN rows for images too small for one window."""
        dr, dc = self.step
        b = self.border
        if dr < 0:  # walk the line with non-negative steps
            y, dr = torch.flip(y, dims=[-2]), -dr
        if dc < 0:
            y, dc = torch.flip(y, dims=[-1]), -dc
        derivative = _shifted_difference(y[..., b:-b, b:-b], (dr, dc))
        height, width = derivative.shape[-2], derivative.shape[-1]
        span_r, span_c = dr * (self.window - 1), dc * (self.window - 1)
        # zeros past the end let every grid position read a whole window with one Gather (a slice per
        # sample cost ~10x more in ONNX Runtime); windows that reach into them are masked out below
        padded = F.pad(derivative, (0, span_c, 0, span_r))
        line = padded.shape[-1]
        rows = torch.arange(0, height, self.stride)
        cols = torch.arange(0, width, self.stride)
        offsets = torch.arange(self.window) * (dr * line + dc)
        index = (rows[:, None, None] * line + cols[None, :, None]) + offsets[None, None, :]
        samples = padded.reshape(y.shape[0], -1).index_select(1, index.reshape(-1))
        samples = samples.reshape(y.shape[0], -1, self.window)  # (B, positions, W)
        inside = ((rows[:, None] + span_r < height) & (cols[None, :] + span_c < width)).reshape(-1)
        inside = inside.to(y.dtype)
        spectrum = torch.matmul(samples, self.basis.to(y.dtype))  # (B, positions, 2F): cos and sin parts
        power = spectrum[..., : self.n_freqs] ** 2 + spectrum[..., self.n_freqs :] ** 2
        mean_power = torch.sum(power * inside[None, :, None], dim=1) / inside.sum()
        level = torch.mean(_per_image(y) ** 2, dim=1, keepdim=True)
        return torch.log10(mean_power / level)

    @staticmethod
    def _mean_and_whitening(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        covariance = np.cov(rows.T)
        covariance += np.eye(rows.shape[1]) * 1e-9 * np.trace(covariance)
        return rows.mean(0), np.linalg.inv(np.linalg.cholesky(covariance))

    def held_out_distances(self, features: np.ndarray) -> np.ndarray:
        """Each calibration profile's distance to a fit on all the others (NaN for rows without a
        profile): what a new in-distribution image scores. A fit's own samples sit closer to it than new
        ones, by more the fewer there are per dimension, so the bound is set on these."""
        finite = np.all(np.isfinite(features), axis=1)
        rows = features[finite].astype(np.float64)
        out = np.full(len(features), np.nan)
        distances = []
        for i in range(len(rows)):
            mean, whitening = self._mean_and_whitening(np.delete(rows, i, axis=0))
            distances.append(float(np.linalg.norm(whitening @ (rows[i] - mean))))
        out[finite] = distances
        return out

    def fit(self, features: np.ndarray) -> None:
        """Calibration profiles (n, F), finite rows only: their mean and the whitening W = L⁻¹ of their
        (slightly regularized) covariance L Lᵀ, so that the distance is ‖W (f − mean)‖."""
        rows = features[np.all(np.isfinite(features), axis=1)].astype(np.float64)
        if len(rows) <= self.n_freqs:
            raise ExportError(
                f"consistency calibration: blur_spectrum needs more than {self.n_freqs} calibration images "
                f"with a spectrum, got {len(rows)}"
            )
        mean, whitening = self._mean_and_whitening(rows)
        self.mean.copy_(torch.from_numpy(mean))
        self.whitening.copy_(torch.from_numpy(whitening))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        centred = self.features(y) - self.mean.to(y.dtype)
        white = torch.matmul(centred, self.whitening.to(y.dtype).T)
        # no positions (an image shorter than the window): no profile, not judged
        return torch.nan_to_num(torch.sqrt(torch.sum(white**2, dim=1)), nan=0.0)


class ConsistencyCheck(nn.Module):
    """(image x̂ (B, 1, H, W), measurement y) -> scores (B, len(self.statistics)), FP32 (FP64 in torch
    when given FP64 inputs: the exact reference the exported graph is checked against)."""

    def __init__(self, task_cfg: TaskConfig, output_range: tuple[float, float], ct_factor: int = 4):
        super().__init__()
        self.task = task_cfg.task
        self.high = float(output_range[1])
        if self.task == "deblur":
            from recon.training.tasks import build_physics

            blur = build_physics(task_cfg)
            kernel = blur.kernel[0, 0].detach().double()
            # a sum of shifted slices, one per non-zero tap: ONNX Runtime's Conv on one channel goes
            # through a layout change that costs ~10x the arithmetic (7 taps for a motion line)
            rows, cols = np.nonzero(kernel.numpy())
            self.taps = [(int(i), int(j), float(kernel[i, j])) for i, j in zip(rows, cols, strict=True)]
            self.kernel_shape = tuple(kernel.shape)
            self.pad = blur._pad
            self.projector = None
            # noise is measured along the motion line, where the blur has already smoothed the image: one
            # step from the line's first tap towards its last (the Laplacian for other kernels)
            self.step = None
            if task_cfg.kernel_kind == "motion" and len(self.taps) > 1:
                (r0, c0, _), (r1, c1, _) = self.taps[0], self.taps[-1]
                n = len(self.taps) - 1
                step = (round((r1 - r0) / n), round((c1 - c0) / n))
                self.step = step if step != (0, 0) else None
            # the spectrum needs the motion line and a blur of 3 taps at least (zeros below f = 1/2)
            self.spectrum = (
                None
                if self.step is None or len(self.taps) < 3
                else BlurSpectrum(self.step, len(self.taps), max(self.pad) + 1, task_cfg.image_size)
            )
        else:
            self.step = self.spectrum = None
            factor = ct_factor
            while task_cfg.image_size % factor:
                factor //= 2
            self.projector = JosephProjector(
                task_cfg.image_size,
                task_cfg.n_views,
                task_cfg.n_detectors,
                task_cfg.angle_range,
                max(1, factor),
                task_cfg.detector_spacing,
            )

    @property
    def statistics(self) -> list[str]:
        """The statistic names, in the order of the graph's output columns."""
        return [name for name in CHECKS[self.task] if name != "blur_spectrum" or self.spectrum is not None]

    def _high_pass(self, y: torch.Tensor) -> torch.Tensor:
        if self.step is None:  # Laplacian, valid part only (no border effect)
            return (
                y[..., :-2, 1:-1]
                + y[..., 2:, 1:-1]
                + y[..., 1:-1, :-2]
                + y[..., 1:-1, 2:]
                - 4 * y[..., 1:-1, 1:-1]
            )
        return _shifted_difference(y, self.step)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """The task's "same" zero-padded correlation (recon.training.physics.Blur.A), for any H×W."""
        padded = F.pad(x, self.pad)
        kh, kw = self.kernel_shape
        out = None
        for i, j, w in self.taps:
            part = padded[..., i : i - (kh - 1) or None, j : j - (kw - 1) or None] * w
            out = part if out is None else out + part
        return out

    def forward(self, image: torch.Tensor, measurement: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        x, y = image.to(dtype), measurement.to(dtype)
        tiny = 1e-12
        if self.projector is None:
            predicted, reference = self._blur(x), y
            # the noise is read from what the output leaves unexplained, not from y itself: textured images
            # have as much high-frequency content as 1% noise, the residual of a consistent output has not
            high_pass = self._high_pass(predicted - y)
        else:
            predicted, reference = self.projector(x), self.projector.bin_measurement(y)
            high_pass = y[..., 2:] - 2 * y[..., 1:-1] + y[..., :-2]
        residual = torch.linalg.vector_norm(_per_image(predicted - reference), dim=1) / (
            torch.linalg.vector_norm(_per_image(reference), dim=1) + tiny
        )
        rms = _rms(y)
        flat = _per_image(y)
        stats = {
            "residual": residual,
            "noise": _median_abs(high_pass) / (rms + tiny),
            "mean": flat.mean(1),
            "min": flat.amin(1),
            "max": flat.amax(1),
            "clipped_high": torch.mean((_per_image(x) >= self.high).to(dtype), dim=1),
        }
        if self.task == "deblur":
            # white noise loses ~5x in a 5x5 mean, the structured residual of a wrong blur much less
            stats["residual_lowpass"] = torch.linalg.vector_norm(
                _per_image(_box5(predicted - reference)), dim=1
            ) / (torch.linalg.vector_norm(_per_image(reference), dim=1) + tiny)
            if self.spectrum is not None:
                stats["blur_spectrum"] = self.spectrum(y)
        if self.task == "ct":
            views = y.sum(-1)[:, 0]  # (B, A): each view's total mass
            mean_view = views.mean(1)
            stats["view_spread"] = (views.amax(1) - views.amin(1)) / (mean_view.abs() + tiny)
        return torch.stack([stats[name] for name in self.statistics], dim=1)


def export_check(check: ConsistencyCheck, path: Path, example_image, example_measurement, opset: int) -> None:
    """Single-file FP32 ONNX with symbolic batch (and, for deblur, symbolic H and W: any image size)."""
    import onnx

    from recon.export.onnx_export import _quiet_exporter

    batch = torch.export.Dim("batch", min=1, max=4096)
    if check.task == "deblur":
        h, w = torch.export.Dim("height", min=8, max=1 << 15), torch.export.Dim("width", min=8, max=1 << 15)
        shapes = ({0: batch, 2: h, 3: w}, {0: batch, 2: h, 3: w})
    else:
        shapes = ({0: batch}, {0: batch})
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(
                check,
                (example_image, example_measurement),
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=[IMAGE_NAME, MEASUREMENT_NAME],
                output_names=[SCORES_NAME],
                opset_version=opset,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"consistency graph: torch.onnx.export failed: {first}") from None
        program.save(str(path), external_data=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


# -- calibration ----------------------------------------------------------------------------------------
def in_distribution_set(task_cfg: TaskConfig, n: int, stream: int, seed: int = 0):
    """(measurements (n, 1, ...), clean (n, 1, N, N)): phantoms and crops of the training sources, with a
    seed stream training never reads, simulated with the training physics and noise."""
    from recon.training.data import TRAIN_IMAGES, clean_images, simulate_pairs

    clean = clean_images(stream, seed, n, task_cfg.image_size, TRAIN_IMAGES)
    pairs = simulate_pairs(clean, task_cfg, seed=10_000 * stream + seed)
    return pairs.measurements.numpy(), clean.numpy()


def _bound(value: float, side: str, margin: float, slack: float) -> float:
    if side == "upper":
        return (value * margin if value > 0 else value / margin) + slack
    return (value / margin if value > 0 else value * margin) - slack


def bounds(
    values: dict[str, np.ndarray], checks: dict[str, str], margin: float = MARGIN
) -> dict[str, dict[str, Any]]:
    """Per statistic: its percentiles on the calibration set, the checked side(s) and the interval."""
    out: dict[str, dict[str, Any]] = {}
    for name, side in checks.items():
        v = np.asarray(values[name], np.float64)
        # An all-zero measurement (a black crop) has no relative residual (x / 0): such inputs carry no
        # calibration information, and the runtime flags a non-finite score on its own.
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ExportError(f"consistency calibration: {name} is not finite on any calibration input")
        entry: dict[str, Any] = {
            "check": side,
            "percentiles": {f"p{p:g}": float(np.percentile(v, p)) for p in PERCENTILES},
            "low": None,
            "high": None,
        }
        slack = SLACK.get(name, 0.0)
        if side in ("lower", "both"):
            entry["low"] = _bound(float(v.min()), "lower", margin, slack)
        if side in ("upper", "both"):
            entry["high"] = _bound(float(v.max()), "upper", margin, slack)
        out[name] = entry
    return out


def score_outputs(session: Any, images: np.ndarray, measurements: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Run the companion graph over (images, measurements) in chunks: (n, n_statistics)."""
    rows = []
    for lo in range(0, len(images), chunk):
        feed = {IMAGE_NAME: images[lo : lo + chunk], MEASUREMENT_NAME: measurements[lo : lo + chunk]}
        rows.append(session.run([SCORES_NAME], feed)[0])
    return np.concatenate(rows)


def run_artifact(directory: Path, measurements: np.ndarray, threads: int | None = None) -> np.ndarray:
    """x̂ exactly as the runtime returns it (clipped, FP32 graph on the CPU), without the check."""
    from recon.runtime.reconstructor import Reconstructor

    outputs = []
    with Reconstructor.from_artifact(directory, backend="cpu", threads=threads, consistency=False) as rec:
        step = rec.max_batch
        for lo in range(0, len(measurements), step):
            outputs.append(rec.run(measurements[lo : lo + step]))
    return np.concatenate(outputs)


def write_consistency(
    directory: Path,
    manifest: Manifest,
    task_cfg: TaskConfig,
    *,
    n_images: int = 500,
    seed: int = 0,
    threads: int | None = None,
    opset: int = 18,
    progress: Any = None,
    cache: Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Write consistency.onnx into the (temp) artifact directory, calibrate it, list both in the manifest.

    Calibration set: `n_images` in-distribution measurements (seed stream CALIBRATION_STREAM). The 32-image
    held-out set is not used, so that its false-alarm count (docs/reliability.md) is a real test. With
    `cache`, the network's outputs on that set are kept there (keyed by model.onnx's sha256) for a later
    `recalibrate`. Returns the manifest's "consistency" entry.

    Memory is bounded by one batch (`calibration_stream`): each batch of measurements is simulated once
    (without the network inputs the set does not need), run through the artifact once and spilled to a
    scratch folder; the scores are read from there once the graph is written.
    """
    from recon.export.calibration_stream import SpilledBatches, progress_bar, save_outputs, simulate_and_run
    from recon.runtime.artifact.consistency_entry import ConsistencyEntry
    from recon.runtime.backends.onnxruntime import new_session, session_options
    from recon.training.data import TRAIN_IMAGES, measurement_batches

    say = progress or (lambda message: None)
    directory = Path(directory)
    output_range = tuple(manifest.output.value_range or (0.0, 1.0))
    check = ConsistencyCheck(task_cfg, output_range).eval()
    n = max(2, n_images)
    say(f"calibrating the consistency check on {n} in-distribution inputs")
    cached = None
    if cache is not None:
        key = f"{manifest.files['model.onnx'].sha256}-{CALIBRATION_STREAM}-{seed}-{n}"
        cached = Path(cache) / f"calibration-{key[:24]}.npy"
    stored = np.load(cached, mmap_mode="r") if cached is not None and cached.exists() else None
    with SpilledBatches() as spill:
        batches = measurement_batches(
            CALIBRATION_STREAM, seed, n, task_cfg, TRAIN_IMAGES, noise_seed=10_000 * CALIBRATION_STREAM + seed
        )
        simulate_and_run(directory, batches, n, threads, stored, spill, show_progress)
        if cached is not None and stored is None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_outputs(cached, spill)
        profiles = None
        if check.spectrum is not None:  # fitted on the calibration measurements before the graph is written
            with torch.no_grad():
                profiles = np.concatenate(
                    [check.spectrum.features(torch.from_numpy(y).double()).numpy() for _, y in spill]
                )
            check.spectrum.fit(profiles)
        images, measurements = spill.first()
        export_check(
            check,
            directory / FILE_NAME,
            torch.from_numpy(images[:2]),
            torch.from_numpy(measurements[:2]),
            opset,
        )
        session = new_session(directory / FILE_NAME, session_options(threads=threads))
        bar = progress_bar(n, "scoring the calibration set", show_progress)
        rows = []
        for x, y in spill:
            rows.append(score_outputs(session, x, y))
            bar.update(len(x))
        bar.close()
        scores = np.concatenate(rows)
    with torch.no_grad():  # the graph must compute what the module does, in float64 (float32 sums over
        # 512² pixels differ by ~1e-5 between torch and onnxruntime, more than either differs from exact)
        reference = check(
            torch.from_numpy(images[:4]).double(), torch.from_numpy(measurements[:4]).double()
        ).numpy()
    names = check.statistics
    close = np.isclose(scores[:4], reference, rtol=2e-4, atol=1e-6, equal_nan=True)
    if not close.all():
        image, column = (int(i) for i in np.argwhere(~close)[0])
        raise ExportError(
            f"consistency graph: onnxruntime and torch disagree on {names[column]} of calibration image "
            f"{image} ({scores[image, column]:.9g} vs {reference[image, column]:.9g}); this is a bug, "
            "please report it"
        )
    values = {name: scores[:, i] for i, name in enumerate(names)}
    if check.spectrum is not None:  # out-of-sample distances: the graph's own are optimistic (see there)
        values["blur_spectrum"] = check.spectrum.held_out_distances(profiles)
    per_stat = bounds(values, {name: CHECKS[check.task][name] for name in names})
    entry: dict[str, Any] = {
        "file": FILE_NAME,
        "inputs": [IMAGE_NAME, MEASUREMENT_NAME],
        "output": SCORES_NAME,
        "statistics": names,
        "bounds": {
            name: {"check": e["check"], "low": e["low"], "high": e["high"]} for name, e in per_stat.items()
        },
        "percentiles": {name: e["percentiles"] for name, e in per_stat.items()},
        "threshold": per_stat["residual"]["high"],
        "margin": MARGIN,
        "rule": RULE,
        "operator": (
            "blur (the task's kernel), any image size"
            if check.task == "deblur"
            else f"Joseph projector on a {check.projector.factor}x coarser grid, detector bins averaged in "
            f"groups of {check.projector.factor}"
        ),
        "calibration": {
            "n": int(len(scores)),
            "source": "recon.training.data.clean_images (phantoms + training-source crops), seed stream "
            f"{CALIBRATION_STREAM}, seed {seed}; simulated with the training physics",
            "precision": "fp32",
        },
    }
    manifest.add_file(directory, FILE_NAME, "consistency", "fp32")
    manifest.consistency = ConsistencyEntry.from_json(entry, manifest.files, f"{directory}/manifest.json")
    manifest.save(directory)
    return entry


def recalibrate(
    artifact: Path, n_images: int = 500, seed: int = 0, threads: int | None = None, cache: Path | None = None
) -> dict[str, Any]:
    """Replace an artifact's consistency check (graph + calibration), atomically, the network untouched."""
    import shutil

    from recon.export.artifact import ArtifactWriter
    from recon.runtime.artifact.manifest import load_manifest

    artifact = Path(artifact)
    manifest = load_manifest(artifact)
    writer = ArtifactWriter(artifact, force=True)
    with writer as tmp:
        for name in manifest.files:
            if name != FILE_NAME:
                shutil.copy2(artifact / name, tmp / name)
        manifest.files.pop(FILE_NAME, None)
        manifest.consistency = None
        manifest.save(tmp)
        entry = write_consistency(
            tmp, manifest, manifest.task_config, n_images=n_images, seed=seed, threads=threads, cache=cache
        )
        writer.commit()
    return entry


if __name__ == "__main__":  # python -m recon.export.consistency ARTIFACT [N_IMAGES] [CACHE_DIR]
    import sys

    args = sys.argv[1:]
    result = recalibrate(
        Path(args[0]),
        int(args[1]) if len(args) > 1 else 500,
        cache=Path(args[2]) if len(args) > 2 else None,
    )
    print(f"threshold {result['threshold']:.4g} on {result['calibration']['n']} inputs")
