"""`Reconstructor`: an artifact directory in, images out, on the best backend this machine has."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime import limits
from recon.runtime.artifact.manifest import ArtifactError, Manifest, check_io_spec, load_manifest
from recon.runtime.artifact.spatial import BLENDS, Spatial, SpatialError, parse_spatial
from recon.runtime.backends import Backend, select_backend
from recon.runtime.consistency import ConsistencyGuard, ImageScore
from recon.runtime.consistency import engine_missing as consistency_engine_missing
from recon.runtime.inputs import (
    check_output,
    finish_batch,
    prepare_batch,
    spatial_shape,
    within_load_contract,
)
from recon.runtime.tiling import reflect_pad, sliding_window
from recon.runtime.verify import GoldenResult, check_golden
from recon.runtime.versions import resolve_artifact

log = logging.getLogger("recon.runtime")


def check_io(manifest: Manifest) -> None:
    """The input/output/batch entries the runtime relies on, as ArtifactError rather than KeyError.

    `load_manifest` checks the same; this covers a Manifest built in code.
    """
    source = f"manifest of {manifest.name!r}"
    check_io_spec(manifest.input.to_json(), "input", source)
    check_io_spec(manifest.output.to_json(), "output", source)
    manifest.batch.check(source)


class Reconstructor:
    """Runs an exported artifact: `Reconstructor.from_artifact(path).run(images)`.

    Thread-safe for `run`: one instance may serve many threads (ONNX Runtime sessions are re-entrant;
    OpenVINO keeps one infer request per concurrent caller; TensorRT one execution context per thread).

    Image sizes (artifacts with a manifest "spatial" entry, artifact/spatial.py): any H × W within the
    runtime's caps. The graph takes it whole when it can (reflect-padded up to its minimum side and cropped
    back); larger images, images for a tiled-only graph (the ViT) and, with `tile=`, anything above that tile
    go through overlapping tiles blended back (`recon.runtime.tiling`). `size_plan(h, w)` says which.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        manifest: Manifest,
        backend: Backend,
        reason: str = "",
        clip: bool | None = None,
        consistency: ConsistencyGuard | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        blend: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self.version: int | None = None  # its number in a model folder (runtime/versions.py), else None
        check_io(manifest)
        self.backend = backend
        self.backend_reason = reason
        self.input_hw = spatial_shape(manifest.input.shape)
        self.output_hw = spatial_shape(manifest.output.shape)
        clip = manifest.output.clips if clip is None else clip
        self.value_range: tuple[float, float] | None = manifest.output.value_range if clip else None
        self.min_batch = manifest.batch.min
        self.max_batch = manifest.batch.max
        self._local = threading.local()
        # close() waits for runs in flight, then stops the backend; later runs raise "closed"
        self._lifecycle = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self.input_kind = "sinogram" if manifest.task == "ct" else "image"  # for error messages
        self.input_range = manifest.input.value_range
        self.consistency = consistency  # None: no scores (switched off, or an artifact without the check)
        self.consistency_skipped = ""  # why a requested check is not run (engine_missing); "" otherwise
        self.spatial = self._spatial(manifest, tile, overlap, blend)
        # a tile given by the caller is a cap: anything larger is tiled even when the graph takes it whole
        self.tile_cap = tile is not None

    def _spatial(
        self, manifest: Manifest, tile: int | None, overlap: int | None, blend: str | None
    ) -> Spatial | None:
        """The manifest's spatial entry with the caller's tile/overlap/blend; None: no entry."""
        source = f"{self.directory}"
        if manifest.spatial is None or self.input_kind != "image":
            if tile is not None or overlap is not None or blend is not None:
                raise ValueError(
                    f"{source}: this artifact has no spatial entry (a CT artifact, or exported before images "
                    "of any size), so tile/overlap/blend do not apply; re-export it with recon-export"
                )
            return None
        try:  # load_manifest checked it; a Manifest built in code is checked here
            base = parse_spatial(manifest.spatial.to_json())
        except SpatialError as error:
            raise ArtifactError(f"{source}: {error}; re-export the artifact") from None
        values = base.to_json()
        if tile is not None:
            if not base.whole_image and tile != base.tile:
                raise ValueError(
                    f"tile={tile}: {manifest.name!r} takes only tiles of {base.tile}×{base.tile} (its graph "
                    "has a fixed size); leave tile unset"
                )
            if isinstance(tile, bool) or not isinstance(tile, int) or not base.min <= tile <= base.max:
                raise ValueError(f"tile must be an integer side in {base.min}..{base.max} px, got {tile!r}")
            if tile % base.multiple_of:
                raise ValueError(f"tile must be a multiple of {base.multiple_of}, got {tile}")
            values["tile"] = tile
            if overlap is None:  # the manifest's overlap may not fit a smaller tile
                values["overlap"] = min(base.overlap, tile // 2)
        if overlap is not None:
            values["overlap"] = overlap
        if blend is not None:
            values["blend"] = blend
        try:
            return parse_spatial(values)
        except SpatialError as error:
            raise ValueError(f"{error} (tile {values['tile']}; blend one of {list(BLENDS)})") from None

    @classmethod
    @within_load_contract
    def from_artifact(
        cls,
        path: str | os.PathLike,
        backend: str = "auto",
        *,
        precision: str = "auto",
        threads: int | None = None,
        clip: bool | None = None,
        consistency: bool = True,
        tile: int | None = None,
        overlap: int | None = None,
        blend: str | None = None,
        **options: Any,
    ) -> Reconstructor:
        """Load and verify an artifact (format version, every file's sha256) and start a backend.

        Args:
            path: the artifact directory (holds manifest.json); or a model folder of numbered versions,
                "models/NAME" (its pinned version, else the newest verified one: runtime/versions.py) or
                "models/NAME@2" (that version).
            backend: "auto", "onnxruntime-cpu"/"cpu", "openvino"/"ov", "onnxruntime-cuda"/"cuda",
                "onnxruntime-tensorrt", "tensorrt". Only "auto" may fall back; `backend_reason` says what it
                chose and why.
            precision: "auto" (FP32 on the CPU; plan or FP16 on a GPU), "fp32", "fp16", "int8", or "bf16"
                (OpenVINO, on CPUs with AVX512_BF16 or AMX; refused elsewhere).
            threads: CPU engine threads (None: the engine's default, one per core).
            clip: clip outputs to the manifest's output value range (default: the manifest's "clip").
            consistency: score every output with the artifact's consistency check (`last_scores`); False
                skips its cost. Artifacts exported without the check run without scores either way.
            tile: tile side in px: images larger than this are tiled even where the graph could take them
                whole (a memory cap); default: the manifest's tile, used only above its maximum side.
            overlap: tile overlap in px (default: the manifest's, from the model's receptive field).
            blend: "gaussian" (default) or "cosine" tile weights.
            options: backend options (device_id, provider_options, optimization_level, trt_cache_dir).
        """
        path, version = resolve_artifact(path)
        manifest = load_manifest(path, verify=True)
        chosen, reason = select_backend(
            path, manifest, backend, precision=precision, threads=threads, **options
        )
        log.info("recon.runtime: %s (file %s, %s)", reason, chosen.file, chosen.precision)
        try:
            guard, skipped = None, ""
            if consistency and manifest.consistency is not None:
                skipped = consistency_engine_missing()  # a [lean]-only install: run, unchecked, and say so
                if skipped:
                    log.warning("recon.runtime: %s", skipped)
                else:
                    guard = ConsistencyGuard(path, manifest, threads=threads)
            spatial = {"tile": tile, "overlap": overlap, "blend": blend}
            reconstructor = cls(path, manifest, chosen, reason, clip=clip, consistency=guard, **spatial)
            reconstructor.consistency_skipped = skipped
            reconstructor.version = version
            return reconstructor
        except BaseException:
            chosen.deactivate()
            raise

    # -- properties ------------------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def precision(self) -> str | None:
        return self.backend.precision

    @property
    def last_timings(self) -> dict[str, float]:
        """Seconds per stage of this thread's last `run`: prepare, [h2d], compute, [d2h], finish, total."""
        return getattr(self._local, "timings", {})

    @property
    def last_scores(self) -> list[ImageScore] | None:
        """This thread's last `run`: one ImageScore per image (residual, statistics, flagged, reasons);
        None when the check is off or the artifact has none."""
        return getattr(self._local, "scores", None)

    # -- running -----------------------------------------------------------------------------------------
    def prepare(self, images: Any) -> tuple[np.ndarray, int]:
        """`images` checked and converted as `run` takes them: ((B, 1, H, W) float32, the caller's rank).

        Raises ValueError on input `run` would refuse; recon-run checks each file with it.
        """
        if isinstance(images, (list, tuple)) and len(images) > 1:
            shapes = {np.shape(image)[-2:] for image in images if hasattr(image, "shape")}
            if len(shapes) > 1:
                raise ValueError(
                    f"{self.input_kind}s of different sizes in one call "
                    f"({', '.join(map(str, sorted(shapes)))}); call run() once per size"
                )
        # integers are scaled by their dtype's maximum for images; a sinogram's integers have no known scale
        scale_integers = self.manifest.task != "ct"
        hw = self.input_hw if self.spatial is None else (None, None)  # any size: whole or tiled
        batch, rank = prepare_batch(images, hw, self.input_kind, self.input_range, scale_integers)
        height, width = batch.shape[-2:]
        if max(height, width) > limits.MAX_IMAGE_SIDE or height * width > limits.MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{self.input_kind} of {height}×{width} px exceeds the runtime's caps "
                f"({limits.MAX_IMAGE_SIDE} px per side, {limits.MAX_IMAGE_PIXELS} px in all; "
                "recon.runtime.limits)"
            )
        return batch, rank

    def run(self, images: Any, return_scores: bool = False) -> Any:
        """Reconstruct a batch: (H, W), (B, H, W) or (B, 1, H, W) in, the same rank out.

        One call takes one size (a batch is one array); for images of different sizes call `run` once per
        size (a list of differently sized arrays is refused with that advice). Inputs: floats as they are,
        integers scaled to [0, 1] by their dtype's maximum. Output: float32, clipped to the manifest's output
        value range when clipping is on. Raises ValueError on bad input.
        With `return_scores`, returns (images, scores): scores as `last_scores`.
        """
        with self._lifecycle:
            if self._closed or not self.backend.is_active:
                raise RuntimeError("this Reconstructor is closed; create a new one with from_artifact()")
            self._in_flight += 1
        try:
            return self._run(images, return_scores)
        finally:
            with self._lifecycle:
                self._in_flight -= 1
                if self._closed:  # close() is waiting (it sets _closed under this lock before it waits)
                    self._lifecycle.notify_all()

    def _run(self, images: Any, return_scores: bool) -> Any:
        start = time.perf_counter()
        batch, rank = self.prepare(images)
        timings: dict[str, float] = {"prepare": time.perf_counter() - start}
        output = self._reconstruct(batch, timings)
        mark = time.perf_counter()
        low, high = check_output(output, batch, self.input_kind, self.manifest.input.value_range)
        clipped = output  # (B, 1, H, W); finish_batch clips it in place and returns the caller's rank
        value_range = self.value_range
        if value_range is not None and value_range[0] <= low and high <= value_range[1]:
            value_range = None  # already inside: the clip would change nothing
        output = finish_batch(output, rank, value_range)
        end = time.perf_counter()
        timings["finish"] = end - mark
        scores = self._score(batch, clipped, timings)
        timings["total"] = time.perf_counter() - start
        self._local.timings = timings
        return (output, scores) if return_scores else output

    def size_plan(self, height: int, width: int) -> str:
        """How an H × W image runs: "whole", "padded" (whole after reflect-padding up to the graph's
        minimum or multiple, cropped back) or "tiled"."""
        spatial = self.spatial
        if spatial is None:
            return "whole"
        if self.tile_cap and max(height, width) > spatial.tile:
            return "tiled"
        if not spatial.whole_image:
            return "whole" if (height, width) == (spatial.tile, spatial.tile) else "tiled"
        padded = self._padded_size(height, width)
        if max(padded) > spatial.max:
            return "tiled"
        return "whole" if padded == (height, width) else "padded"

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        spatial = self.spatial
        assert spatial is not None
        multiple = spatial.multiple_of
        return tuple(-(-max(side, spatial.min) // multiple) * multiple for side in (height, width))  # type: ignore[return-value]

    def _reconstruct(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        """The network's output for the whole batch: whole, padded or tiled (see `size_plan`)."""
        height, width = batch.shape[-2:]
        plan = self.size_plan(height, width)
        if plan == "whole":
            return self._infer_batches(batch, timings)
        if plan == "padded":
            padded = reflect_pad(batch, *self._padded_size(height, width))
            return np.ascontiguousarray(self._infer_batches(padded, timings)[..., :height, :width])
        spatial = self.spatial
        assert spatial is not None
        return sliding_window(
            batch,
            lambda tiles: self._infer_batches(tiles, timings),
            self._tile_shape(height, width),
            spatial.overlap,
            batch_size=self.max_batch,
            blend=spatial.blend,
            # a finite receptive field: drop tile borders, so tiles agree with the whole image (tiling.py);
            # attention sees the whole tile anyway, there plain blending hides the seams best
            trim=spatial.overlap // 2 if spatial.receptive_field is not None else 0,
        )

    def _tile_shape(self, height: int, width: int) -> tuple[int, int]:
        """Tiles of the spatial tile side; a whole-image graph takes narrower tiles for a narrow image."""
        spatial = self.spatial
        assert spatial is not None
        if not spatial.whole_image:
            return spatial.tile, spatial.tile
        padded_h, padded_w = self._padded_size(height, width)
        return min(spatial.tile, padded_h), min(spatial.tile, padded_w)

    def _infer_batches(self, batch: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        """Run any number of same-size images through the backend in chunks of the batch profile."""
        n = batch.shape[0]
        if self.min_batch <= n <= self.max_batch:
            output = self._infer(batch)
            self._add_timings(timings)
            return output
        output = None
        for first in range(0, n, self.max_batch):
            chunk = batch[first : first + self.max_batch]
            size = chunk.shape[0]
            if size < self.min_batch:  # pad up to the profile's minimum, drop the padding after
                pad = np.zeros((self.min_batch - size, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            result = self._infer(chunk)
            if output is None:
                output = np.empty((n, *result.shape[1:]), np.float32)
            output[first : first + size] = result[:size]
            self._add_timings(timings)
        assert output is not None
        return output

    def _add_timings(self, timings: dict[str, float]) -> None:
        for stage, seconds in self.backend.last_timings.items():
            if stage != "total":
                timings[stage] = timings.get(stage, 0.0) + seconds

    def _score(
        self, batch: np.ndarray, output: np.ndarray, timings: dict[str, float]
    ) -> list[ImageScore] | None:
        """The trust signal (runtime/consistency.py) on the whole images, after inference; reads only."""
        if self.consistency is None:
            self._local.scores = None
            return None
        mark = time.perf_counter()
        scores = self.consistency.score(output, batch)
        timings["consistency"] = time.perf_counter() - mark
        self._local.scores = scores
        return scores

    __call__ = run

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """The backend's output, held to the shape and dtype the manifest promises."""
        output = self.backend.infer(batch)
        expected = (batch.shape[0], 1, *(self.output_hw if self.spatial is None else batch.shape[-2:]))
        if output.shape != expected and (  # a symbolic (None) output side takes any size
            output.ndim != 4
            or any(w is not None and g != w for g, w in zip(output.shape, expected, strict=True))
        ):
            h, w = ("H" if d is None else d for d in self.output_hw)  # symbolic: any size
            raise ArtifactError(
                f"{self.directory}: the {self.backend.name} graph returned shape {output.shape} for a batch "
                f"of {batch.shape[0]}, the manifest promises ({batch.shape[0]}, 1, {h}, {w}); "
                "re-export the artifact"
            )
        return output if output.dtype == np.float32 else output.astype(np.float32)

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zeros once per batch size (first runs allocate memory and, on GPUs, pick kernels)."""
        h, w = (d or (self.spatial.opt if self.spatial else 256) for d in self.input_hw)
        for size in batch_sizes:
            self.run(np.zeros((size, 1, h, w), np.float32))

    def verify(self) -> GoldenResult:
        """Run the artifact's golden inputs on this backend and precision and compare with the references
        stored at export (`recon verify`): max |error|, PSNR, pass or fail against the tolerance, why."""
        return check_golden(self)

    def describe(self) -> dict[str, Any]:
        return {
            "artifact": str(self.directory),
            "version": self.version,
            "name": self.manifest.name,
            "task": self.manifest.task,
            "reason": self.backend_reason,
            "input": self.manifest.input.to_json(),
            "output": self.manifest.output.to_json(),
            "batch": self.manifest.batch.to_json(),
            "spatial": None if self.spatial is None else self.spatial.to_json(),
            **self.backend.describe(),
            "consistency": None if self.consistency is None else self.consistency.describe(),
        }

    # -- lifecycle ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the backend once the runs in flight (other threads) have returned; later runs raise a
        RuntimeError saying it is closed. Idempotent. Not from inside a run on the same thread."""
        with self._lifecycle:
            self._closed = True
            self._lifecycle.wait_for(lambda: self._in_flight == 0)
        if self.backend.is_active:
            self.backend.deactivate()

    def __enter__(self) -> Reconstructor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        name, backend, precision = self.manifest.name, self.backend_name, self.precision
        return f"Reconstructor({name!r}, backend={backend!r}, precision={precision!r})"
