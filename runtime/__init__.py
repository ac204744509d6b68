"""recon's lean runtime: numpy + onnxruntime (+ TensorRT). It never imports torch or the training code.

from recon.runtime import Reconstructor
with Reconstructor.from_artifact("artifacts/resunet-deblur") as reconstructor:
    images = reconstructor.run(blurred)          # (H, W), (B, H, W) or (B, 1, H, W)
"""

from recon.runtime.artifact.manifest import FORMAT_VERSION, ArtifactError, Manifest, load_manifest
from recon.runtime.backends import BACKENDS, BackendError
from recon.runtime.live_model import LiveModel
from recon.runtime.qualify import qualify
from recon.runtime.reconstructor import Reconstructor

__all__ = [
    "BACKENDS",
    "FORMAT_VERSION",
    "ArtifactError",
    "BackendError",
    "LiveModel",
    "Manifest",
    "Reconstructor",
    "load_manifest",
    "qualify",
]
