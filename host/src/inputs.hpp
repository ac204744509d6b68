// What run() takes, turned into what a graph takes, with recon.runtime.inputs' checks and messages:
// ranks (H, W) / (B, H, W) / (B, 1, H, W), the artifact's fixed sizes, integer scaling by the type's
// maximum (refused for CT sinograms), no NaN/Inf, values no further than one range-width outside the input
// range, the runtime's size caps; and the output's NaN/Inf check.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "recon/recon.hpp"

namespace recon::inputs {

struct Batch {
    std::vector<float> owned;  // empty when `data` is the caller's float32 array itself
    const float* data = nullptr;
    int64_t count = 0, height = 0, width = 0;
    int rank = 4;
    float low = 0, high = 0;  // min and max, finite
};

struct Rules {
    std::array<std::optional<int64_t>, 2> hw;  // fixed sides; nullopt: any
    std::string what = "image";                // "image" or "sinogram", for messages
    std::optional<std::pair<double, double>> value_range;
    bool scale_integers = true;
};

Batch prepare(const void* data, DType dtype, const std::vector<int64_t>& shape, const Rules& rules);

// InputError when the network's output holds NaN/Inf; otherwise its (min, max).
std::pair<float, float> check_output(const std::vector<float>& output, const Batch& batch, const Rules& rules);

}  // namespace recon::inputs
