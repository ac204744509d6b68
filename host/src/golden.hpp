// The golden set of a format-3 artifact and its comparison, as recon.runtime.artifact.golden and
// recon.runtime.verify hold them: the "golden" entry checked (same messages), golden/inputs.npy and
// golden/outputs.npy read through read_verified (hashed before a byte is parsed), outputs held to the
// tolerance of this backend/precision (or the loosest measured at that precision).
#pragma once

#include <string>
#include <vector>

#include "manifest.hpp"
#include "recon/recon.hpp"

namespace recon::golden {

struct Array {
    std::vector<int64_t> shape;  // (N, 1, H, W)
    std::vector<float> values;
};

struct Set {
    Array inputs, outputs;
};

// The golden set, checked; ArtifactError as recon.runtime's load_golden raises it. Call only with a golden entry.
Set load(const std::string& directory, const artifact::Manifest& manifest);

// The references against `outputs` (with its scores), as runtime/verify.py's compare().
Verification compare(const Set& set, const Result& outputs, const artifact::Manifest& manifest,
                     const std::string& backend, const std::string& precision);

}  // namespace recon::golden
