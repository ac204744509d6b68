"""`recon-export --add`: add variants (FP16, INT8, the bf16 report, the consistency check) to an artifact
without losing what it holds.

An artifact is one verified whole: the parity report compares every file against torch on the same inputs,
and the manifest lists every file's sha256. So adding a file re-exports the whole artifact from the same
weights, with the union of what the artifact holds and what is asked, and replaces it atomically
(`ArtifactWriter`): every file is re-verified, the manifest is rewritten in one rename, and a failure leaves
the old artifact as it was. What cannot be reproduced is refused rather than dropped: other weights than the
ones the artifact was made from, an untrained (random) network, an engine this machine cannot rebuild.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError


def merged_options(options: Any) -> tuple[Any, list[str]]:
    """(the options that rebuild the artifact at `options.target()` with what it holds plus what `options`
    asks, the names of the variants it already holds). Raises ExportError when it cannot be reproduced."""
    from recon.runtime.artifact.manifest import ArtifactError, load_manifest

    target = options.target()
    if not (target / "manifest.json").exists():
        raise ExportError(f"--add: {target} is not an artifact (no manifest.json); drop --add to create it")
    try:
        manifest = load_manifest(target)
    except ArtifactError as error:
        raise ExportError(f"--add: {target} cannot be read ({error}); re-export it with --force") from None
    model = manifest.model
    if model.get("name") != options.model or manifest.task != options.task:
        raise ExportError(
            f"--add: {target} holds {model.get('name')}-{manifest.task}, not {options.model}-{options.task}; "
            f"pass --model {model.get('name')} --task {manifest.task}"
        )
    if model.get("weights_source") == "random-init":
        raise ExportError(
            f"--add: {target} holds an untrained (random-init) network that cannot be made again; "
            "re-export it with --force and every variant you want"
        )
    if model.get("weights_source") == "user" and options.weights is None:
        raise ExportError(
            f"--add: {target} was exported from your weights "
            f"(sha256 {str(model.get('weights_sha256'))[:12]}…); pass the same --weights"
        )
    precisions = {entry.precision for entry in manifest.files.values() if entry.kind == "onnx"}
    held = sorted(p for p in precisions if p != "fp32")
    parity = manifest.parity or {}
    bf16 = "bf16_heldout_loss_db" in parity
    held += ["bf16 report"] * bf16
    engine = options.engine
    if "model.plan" in manifest.files:
        held.append("TensorRT engine")
        engine = "trt"  # rebuilt, or a clear error before any work: never silently dropped
    consistency = manifest.consistency
    n_consistency = int(consistency.details.get("calibration", {}).get("n", 0)) if consistency else 0
    trained = model.get("trained_task_config")
    deployed_json = manifest.task_config.to_json()
    deployed = {key: value for key, value in deployed_json.items() if key != "task"}
    batch = manifest.batch
    spatial = manifest.spatial
    merged = dataclasses.replace(
        options,
        fp16=options.fp16 or "fp16" in precisions,
        int8=options.int8 or "int8" in precisions,
        bf16=options.bf16 or bf16,
        engine=engine,
        batch=(batch.min, batch.opt, batch.max),
        spatial=(spatial.min, spatial.opt, spatial.max)
        if spatial and spatial.whole_image
        else options.spatial,
        task_overrides=deployed,
        allow_geometry_change=options.allow_geometry_change or bool(trained) and trained != deployed_json,
        consistency_images=n_consistency,  # the check it has, calibrated as before; none stays none
        force=True,
    )
    return merged, held


def check_same_weights(target: Path, source: dict[str, Any]) -> None:
    """The weights loaded now must be the artifact's: adding a variant never swaps the network."""
    from recon.runtime.artifact.manifest import load_manifest

    before = load_manifest(target).model.get("weights_sha256")
    if before != source.get("weights_sha256"):
        raise ExportError(
            f"--add: {target} was made from weights sha256 {str(before)[:12]}…, these are "
            f"{str(source.get('weights_sha256'))[:12]}…; adding a variant keeps the network — re-export "
            "with --force to replace it"
        )
