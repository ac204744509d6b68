"""recon's lean runtime: numpy + onnxruntime (+ TensorRT). It never imports torch or the training code."""

from recon.runtime.manifest import FORMAT_VERSION, ArtifactError, Manifest, load_manifest

__all__ = ["FORMAT_VERSION", "ArtifactError", "Manifest", "load_manifest"]
