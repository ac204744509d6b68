"""Triton python-backend model: a recon artifact served through `recon.runtime` inside Triton.

`recon-export --triton-repo` copies this file, as text, to `<repo>/<model>/1/model.py` beside `1/artifact/`;
it is never imported by recon itself (`triton_python_backend_utils` exists only inside Triton's python stub).
It imports nothing but numpy and `recon.runtime`, so the server's environment needs recon's base install and
onnxruntime, not torch.

- initialize: the artifact is loaded with `Reconstructor.from_artifact` (manifest format and every file's
  sha256 checked); a damaged artifact fails the model's load with the runtime's one-line reason.
- execute: Triton's dynamic batcher hands over several requests; each is validated on its own (shape, dtype,
  NaN/Inf, value range, as `Reconstructor.run` does in process) so one bad request fails alone, then the good
  ones run as one batch and are split back. Every error goes back as that request's TritonError; nothing
  raised here may reach the stub (which would fail the whole batch, or worse, the instance).

Python backend API used (triton-inference-server/python_backend, README "Usage" and "Error Handling"):
`TritonPythonModel.initialize(args)` with args["model_config"] (JSON), args["model_repository"] (the model's
folder), args["model_version"]; `pb_utils.get_input_tensor_by_name(request, name).as_numpy()`,
`pb_utils.Tensor(name, array)`, `pb_utils.InferenceResponse(output_tensors, error=pb_utils.TritonError(m))`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from recon.runtime import Reconstructor


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"], "artifact")
        threads = int(_parameter(config, "recon_threads", "0")) or None
        self.reconstructor = Reconstructor.from_artifact(
            folder,
            backend=_parameter(config, "recon_backend", "auto"),
            precision=_parameter(config, "recon_precision", "auto"),
            threads=threads,
        )
        manifest = self.reconstructor.manifest
        self.input_name = manifest.input.name
        self.output_name = manifest.output.name
        self.what = self.reconstructor.input_kind

    def _error(self, message: str, code: str = "INTERNAL") -> object:
        # TritonError(message, code): the code (INVALID_ARG for the caller's mistakes) reaches the client
        # as the gRPC/HTTP status; codes exist since python_backend r23.08 (the bundled 2.51 stub has them)
        status = getattr(pb_utils.TritonError, code, None)
        error = pb_utils.TritonError(message) if status is None else pb_utils.TritonError(message, status)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def _response(self, images: np.ndarray) -> object:
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, images)])

    def _run_one(self, batch: np.ndarray) -> object:
        try:
            return self._response(self.reconstructor.run(batch))
        except ValueError as error:  # the runtime's input/output checks: the caller's to fix
            return self._error(str(error), "INVALID_ARG")
        except Exception as error:  # backend failures: fail this request, keep the instance serving
            return self._error(f"recon.runtime failed: {type(error).__name__}: {error}")

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good: list[tuple[int, np.ndarray]] = []
        recon = self.reconstructor
        for i, request in enumerate(requests):
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
                if tensor is None:
                    responses[i] = self._error(f"request has no input {self.input_name!r}", "INVALID_ARG")
                    continue
                batch, rank = recon.prepare(tensor.as_numpy())  # the rule run() applies, per request
                if rank != 4:
                    responses[i] = self._error(
                        f"{self.what} must be (B, 1, H, W), got rank {rank}", "INVALID_ARG"
                    )
                    continue
                good.append((i, batch))
            except ValueError as error:
                responses[i] = self._error(str(error), "INVALID_ARG")
            except Exception as error:  # a bug here must fail this request, not the model instance
                responses[i] = self._error(f"internal error {type(error).__name__}: {error}")
        if len(good) == 1:
            i, batch = good[0]
            responses[i] = self._run_one(batch)
        elif good:
            try:  # the requests Triton batched together, as one run, split back
                outputs = recon.run(np.concatenate([batch for _, batch in good]))
                first = 0
                for i, batch in good:
                    responses[i] = self._response(outputs[first : first + len(batch)])
                    first += len(batch)
            except Exception:  # e.g. NaN out of one request: run them apart to say which
                for i, batch in good:
                    responses[i] = self._run_one(batch)
        for i, response in enumerate(responses):
            if response is None:  # cannot happen; never hand Triton a None
                responses[i] = self._error("internal error: no response")
        return responses

    def finalize(self) -> None:
        self.reconstructor.close()
