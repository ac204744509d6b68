// The trust signal, as recon.runtime.consistency does it: the artifact's consistency.onnx (hash-verified,
// self-contained) on OpenVINO in f32, compiled once per pair of input shapes, fed the clipped output and
// the measurement as fed to the network, in runs of at most 32 images and 2^22 pixels; each statistic
// judged against the manifest's bounds.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine.hpp"
#include "manifest.hpp"
#include "recon/recon.hpp"

namespace recon::consistency {

class Guard {
  public:
    Guard(const std::string& directory, const artifact::Manifest& manifest, int threads);
    // images (n, 1, H, W) as returned (clipped), measurements (n, 1, h, w) as fed to the network
    std::vector<Score> score(const float* images, const std::vector<int64_t>& image_shape, const float* measurements,
                             const std::vector<int64_t>& measurement_shape);
    Score judge(const std::vector<double>& row) const;

  private:
    artifact::ConsistencyEntry entry_;
    std::unique_ptr<engine::CompiledShapes> shapes_;
    int64_t max_batch_ = 32;
    int64_t max_pixels_ = int64_t{1} << 22;
};

}  // namespace recon::consistency
