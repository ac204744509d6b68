// Padding and sliding-window (tiled) inference, as recon.runtime.tiling does it (MONAI's scheme plus the
// `trim` band): the same window starts, importance maps and float32 accumulation order, so tiled outputs
// match the Python runtime's.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace recon::tiling {

// (n, 1, h, w) float32 images, row-major.
struct Images {
    std::vector<float> data;
    int64_t count = 0, height = 0, width = 0;
};

// Padded at the bottom/right up to (height, width) as numpy.pad's "reflect" (repeated when the pad is
// longer than the image), or "edge" when a side is a single pixel.
Images reflect_pad(const float* images, int64_t count, int64_t h, int64_t w, int64_t height, int64_t width);

std::vector<int64_t> window_starts(int64_t size, int64_t tile, int64_t overlap);
// (tile_h, tile_w) float32 weights, max 1, strictly positive; blend "gaussian" or "cosine".
std::vector<float> importance_map(int64_t tile_h, int64_t tile_w, const std::string& blend);

// The predictor takes (n, 1, tile_h, tile_w) tiles (n <= batch_size) and returns the same shape.
using Predictor = std::function<std::vector<float>(const float* tiles, int64_t n, int64_t tile_h, int64_t tile_w)>;

Images sliding_window(const float* images, int64_t count, int64_t height, int64_t width, const Predictor& predictor,
                      int64_t tile_h, int64_t tile_w, int64_t overlap, int64_t batch_size, const std::string& blend,
                      int64_t trim);

}  // namespace recon::tiling
