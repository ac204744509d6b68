"""The artifact contract: manifest.json parsed into typed objects, the task configuration, the any-size
(spatial) entry and the ONNX graph checks. Imports only runtime/io (safe file reads) and runtime/limits."""
