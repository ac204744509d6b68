"""Latency of a Reconstructor: warm-up, N timed runs, percentiles, throughput, per-stage times.

`profile_against_bare` also times a bare `onnxruntime.InferenceSession.run` on the same graph with the same
options, interleaved run for run with the Reconstructor so that load from elsewhere hits both alike.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.backends.base import STAGES
from recon.runtime.io.files import temp_beside, write_json_atomic


@dataclass
class LatencyReport:
    """Per-run latencies (seconds) of one backend at one batch size, and what they summarise to."""

    label: str
    batch_size: int
    latencies_s: list[float]
    stages_s: dict[str, list[float]] = field(default_factory=dict)
    warmup: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def _ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3)

    @property
    def iters(self) -> int:
        return len(self.latencies_s)

    @property
    def p50_ms(self) -> float:
        return self._ms(50)

    @property
    def p90_ms(self) -> float:
        return self._ms(90)

    @property
    def p95_ms(self) -> float:
        return self._ms(95)

    @property
    def p99_ms(self) -> float:
        return self._ms(99)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.latencies_s) * 1e3)

    @property
    def std_ms(self) -> float:
        return float(np.std(self.latencies_s) * 1e3)

    @property
    def throughput(self) -> float:
        """Images per second at this batch size (from the mean latency)."""
        return float(self.batch_size / np.mean(self.latencies_s))

    def stage_ms(self) -> dict[str, float]:
        """Mean milliseconds per stage, in pipeline order, for the stages the backend told apart."""
        order = [s for s in STAGES if s in self.stages_s] + [s for s in self.stages_s if s not in STAGES]
        return {s: float(np.mean(self.stages_s[s]) * 1e3) for s in order}

    @property
    def own_ms(self) -> float:
        """Mean milliseconds per run spent outside the backend's own stages (h2d, compute, d2h): the
        runtime's cost of validating, converting, splitting and clipping (the consistency check, timed as
        its own stage, is not counted here). 0 when stages are unknown."""
        inner = [self.stages_s[s] for s in ("h2d", "compute", "d2h") if s in self.stages_s]
        if not inner or any(len(v) != len(self.latencies_s) for v in inner):
            return 0.0
        backend = np.sum(inner, axis=0)
        if len(self.stages_s.get("consistency", ())) == len(self.latencies_s):
            backend = backend + np.asarray(self.stages_s["consistency"])
        return float(np.mean(np.asarray(self.latencies_s) - backend) * 1e3)

    @property
    def consistency_ms(self) -> float | None:
        """Mean milliseconds per run of the consistency check (None when it was off)."""
        values = self.stages_s.get("consistency")
        return float(np.mean(values) * 1e3) if values else None

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "batch_size": self.batch_size,
            "iters": self.iters,
            "warmup": self.warmup,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "std_ms": self.std_ms,
            "throughput_img_s": self.throughput,
            "stages_ms": self.stage_ms(),
            "own_ms": self.own_ms,
            "consistency_ms": self.consistency_ms,
            **self.meta,
        }

    def to_json(self) -> dict[str, Any]:
        """The summary plus every run's latency (ms), JSON-ready."""
        return {**self.summary(), "latencies_ms": [t * 1e3 for t in self.latencies_s]}

    def save_json(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json())


def random_batch(reconstructor: Any, batch_size: int, seed: int = 0) -> np.ndarray:
    """(B, 1, H, W) float32 in [0, 1] of the artifact's input shape (symbolic sizes: 256)."""
    h, w = (d or 256 for d in reconstructor.input_hw)
    return np.random.default_rng(seed).random((batch_size, 1, h, w), dtype=np.float32)


# the CPU features that decide the ranking of CPU engines and precisions (benchmarks print them)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """ "<model>, <n> cores; flags: <those of CPU_FLAGS it has>" (Linux; the platform's name elsewhere)."""
    import platform

    from recon.runtime.backends.openvino import flags_in_cpuinfo

    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; flags unknown"
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    present = sorted(flags_in_cpuinfo(text) & set(CPU_FLAGS), key=CPU_FLAGS.index)
    return f"{model}, {os.cpu_count()} cores; flags: {', '.join(present) or 'none of ' + '/'.join(CPU_FLAGS)}"


def _meta(reconstructor: Any) -> dict[str, Any]:
    return {
        "backend": reconstructor.backend_name,
        "precision": reconstructor.precision,
        "artifact": reconstructor.manifest.name,
    }


def profile(
    reconstructor: Any,
    batch_size: int = 1,
    iters: int = 100,
    warmup: int = 10,
    batch: np.ndarray | None = None,
) -> LatencyReport:
    """Time `reconstructor.run` on one batch `iters` times after `warmup` untimed runs."""
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, iters >= 1, warmup >= 0; got {batch_size}, {iters}, {warmup}"
        )
    batch = random_batch(reconstructor, batch_size) if batch is None else batch
    for _ in range(warmup):
        reconstructor.run(batch)
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(iters):
        start = time.perf_counter()
        reconstructor.run(batch)
        latencies.append(time.perf_counter() - start)
        for stage, seconds in reconstructor.last_timings.items():
            if stage != "total":
                stages.setdefault(stage, []).append(seconds)
    return LatencyReport(
        reconstructor.backend_name, batch_size, latencies, stages, warmup, _meta(reconstructor)
    )


def bare_session(reconstructor: Any) -> Any:
    """A plain `onnxruntime.InferenceSession` on the Reconstructor's graph with its options and providers."""
    backend = reconstructor.backend
    if not hasattr(backend, "session_options"):
        raise ValueError(
            f"backend {backend.name!r} does not run through onnxruntime; no bare session to compare"
        )
    from recon.runtime.backends.onnxruntime import new_session

    return new_session(backend.onnx_path, backend.session_options(), backend.providers())


def bare_openvino(reconstructor: Any, shape: tuple[int, ...], new_session: bool = False) -> Any:
    """An OpenVINO infer request on the CompiledModel the backend uses for this input shape (or,
    `new_session`, one compiled again alike, with the same properties): the engine called directly."""
    backend = reconstructor.backend
    compiled, _ = backend.compiled_for(shape)
    if new_session:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(backend.onnx_path))
        if compiled.input(0).get_partial_shape().is_static:
            model.reshape({0: openvino.PartialShape(list(shape))})
        compiled = core.compile_model(model, "CPU", backend.config())
    return compiled.create_infer_request()


def profile_against_bare(
    reconstructor: Any,
    batch_size: int = 1,
    iters: int = 100,
    warmup: int = 10,
    new_session: bool = False,
) -> tuple[LatencyReport, LatencyReport]:
    """(runtime, bare) reports; the two alternate run for run on the same float32 batch.

    By default "bare" calls the Reconstructor's own InferenceSession (OpenVINO: CompiledModel) directly, so
    the difference is the runtime's own cost and nothing else; `new_session` builds a second session with
    the same options (adds session-to-session variance, which on a shared CPU can exceed the overhead being
    measured).
    """
    batch = random_batch(reconstructor, batch_size)
    feed_name, output_name = reconstructor.manifest.input.name, reconstructor.manifest.output.name
    # the bare loop gets what the engine needs and nothing else: no validation, no splitting, no clipping
    top = reconstructor.max_batch
    chunks = [batch[i : i + top] for i in range(0, batch_size, top)]
    if getattr(reconstructor.backend, "compiled", None) is not None:  # OpenVINO
        requests = {c.shape: bare_openvino(reconstructor, c.shape, new_session) for c in chunks}
        engine = "openvino"

        def bare() -> None:
            for chunk in chunks:
                requests[chunk.shape].infer({feed_name: chunk}, share_inputs=True)

    else:
        own = getattr(reconstructor.backend, "session", None)
        session = bare_session(reconstructor) if new_session else own
        if session is None:
            raise ValueError(
                f"backend {reconstructor.backend_name!r} has no onnxruntime session to compare with"
            )
        engine = "onnxruntime"

        def bare() -> None:
            for chunk in chunks:
                session.run([output_name], {feed_name: chunk})

    for _ in range(warmup):
        reconstructor.run(batch)
        bare()
    ours: list[float] = []
    theirs: list[float] = []
    stages: dict[str, list[float]] = {}
    for i in range(iters):
        # alternate which goes first, so neither always inherits the other's warm caches
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            if which == 0:
                reconstructor.run(batch)
                ours.append(time.perf_counter() - start)
                for stage, seconds in reconstructor.last_timings.items():
                    if stage != "total":
                        stages.setdefault(stage, []).append(seconds)
            else:
                bare()
                theirs.append(time.perf_counter() - start)
    meta = _meta(reconstructor)
    runtime_report = LatencyReport(reconstructor.backend_name, batch_size, ours, stages, warmup, meta)
    bare_report = LatencyReport(
        f"bare {engine}",
        batch_size,
        theirs,
        {},
        warmup,
        {**meta, "backend": f"bare {engine} " + reconstructor.backend_name},
    )
    ratio = runtime_report.p50_ms / bare_report.p50_ms
    runtime_report.meta["overhead_vs_bare"] = ratio
    return runtime_report, bare_report


def save_histogram(reports: LatencyReport | list[LatencyReport], path: str | os.PathLike) -> Path:
    """A latency histogram PNG, one series per report. Needs matplotlib (`pip install recon[plot]`)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError("the latency histogram needs matplotlib: `pip install recon[plot]`") from None
    reports = [reports] if isinstance(reports, LatencyReport) else list(reports)
    figure = Figure(figsize=(7, 4), dpi=120)  # no pyplot: leaves a host application's state alone
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for report in reports:
        ms = np.asarray(report.latencies_s) * 1e3
        axes.hist(
            ms,
            bins=min(50, max(5, len(ms) // 4)),
            alpha=0.6,
            label=f"{report.label} ×{report.batch_size}: p50 {report.p50_ms:.2f} ms",
        )
    axes.set_xlabel("latency per run (ms)")
    axes.set_ylabel("runs")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    fd, tmp = temp_beside(path)  # a reader never sees half a PNG
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
