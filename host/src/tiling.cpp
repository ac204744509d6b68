#include "tiling.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace recon::tiling {
namespace {

constexpr double kSigmaScale = 0.125;  // MONAI's default Gaussian sigma, as a fraction of the tile side

// numpy "reflect": the signal continued with period 2(n - 1), mirrored about its first and last sample
int64_t reflected(int64_t index, int64_t size, bool edge) {
    if (index < size) return index;
    if (edge || size == 1) return size - 1;
    int64_t period = 2 * (size - 1);
    int64_t m = index % period;
    return m < size ? m : period - m;
}

std::vector<double> window_line(int64_t size, const std::string& blend) {
    std::vector<double> line(static_cast<size_t>(size));
    double centre = (static_cast<double>(size) - 1) / 2.0;
    for (int64_t i = 0; i < size; ++i) {
        double axis = static_cast<double>(i) - centre;
        if (blend == "gaussian") {
            double sigma = kSigmaScale * static_cast<double>(size);
            line[static_cast<size_t>(i)] = std::exp(-(axis * axis) / (2.0 * (sigma * sigma)));
        } else if (blend == "cosine") {
            line[static_cast<size_t>(i)] = 0.5 * (1.0 + std::cos(M_PI * axis / (centre + 1.0)));
        } else if (blend == "constant") {
            line[static_cast<size_t>(i)] = 1.0;
        } else {
            throw std::invalid_argument("unknown blend '" + blend + "'; choose gaussian, cosine or constant");
        }
    }
    return line;
}

// `weights` with `trim` px zeroed along the window edges that lie inside the image
std::vector<float> trimmed(const std::vector<float>& weights, int64_t row, int64_t col, int64_t tile_h, int64_t tile_w,
                           int64_t full_h, int64_t full_w, int64_t trim) {
    std::vector<float> out = weights;
    if (trim == 0) return out;
    for (int64_t r = 0; r < tile_h; ++r)
        for (int64_t c = 0; c < tile_w; ++c) {
            bool zero = (row > 0 && r < trim) || (row + tile_h < full_h && r >= tile_h - trim) ||
                        (col > 0 && c < trim) || (col + tile_w < full_w && c >= tile_w - trim);
            if (zero) out[static_cast<size_t>(r * tile_w + c)] = 0.0f;
        }
    return out;
}

}  // namespace

Images reflect_pad(const float* images, int64_t count, int64_t h, int64_t w, int64_t height, int64_t width) {
    Images out;
    out.count = count;
    out.height = std::max(height, h);
    out.width = std::max(width, w);
    bool edge = std::min(h, w) <= 1;  // a single row/column cannot reflect
    out.data.resize(static_cast<size_t>(count * out.height * out.width));
    std::vector<int64_t> columns(static_cast<size_t>(out.width));
    for (int64_t c = 0; c < out.width; ++c) columns[static_cast<size_t>(c)] = reflected(c, w, edge);
    for (int64_t i = 0; i < count; ++i)
        for (int64_t r = 0; r < out.height; ++r) {
            const float* source = images + (i * h + reflected(r, h, edge)) * w;
            float* target = out.data.data() + (i * out.height + r) * out.width;
            std::copy(source, source + w, target);
            for (int64_t c = w; c < out.width; ++c) target[c] = source[columns[static_cast<size_t>(c)]];
        }
    return out;
}

std::vector<int64_t> window_starts(int64_t size, int64_t tile, int64_t overlap) {
    if (tile >= size) return {0};
    int64_t step = std::max<int64_t>(tile - overlap, 1);
    int64_t count = (size - tile + step - 1) / step + 1;  // ceil
    std::set<int64_t> starts;
    for (int64_t i = 0; i < count; ++i) starts.insert(std::min(i * step, size - tile));
    return {starts.begin(), starts.end()};
}

std::vector<float> importance_map(int64_t tile_h, int64_t tile_w, const std::string& blend) {
    std::vector<double> rows = window_line(tile_h, blend), cols = window_line(tile_w, blend);
    std::vector<double> weights(static_cast<size_t>(tile_h * tile_w));
    double peak = 0;
    for (int64_t r = 0; r < tile_h; ++r)
        for (int64_t c = 0; c < tile_w; ++c) {
            double v = rows[static_cast<size_t>(r)] * cols[static_cast<size_t>(c)];
            weights[static_cast<size_t>(r * tile_w + c)] = v;
            peak = std::max(peak, v);
        }
    double smallest = INFINITY;
    for (double& v : weights) {
        v /= peak;
        if (v > 0) smallest = std::min(smallest, v);
    }
    std::vector<float> out(weights.size());
    for (size_t i = 0; i < weights.size(); ++i) out[i] = static_cast<float>(std::max(weights[i], smallest));
    return out;
}

Images sliding_window(const float* images, int64_t count, int64_t height, int64_t width, const Predictor& predictor,
                      int64_t tile_h, int64_t tile_w, int64_t overlap, int64_t batch_size, const std::string& blend,
                      int64_t trim) {
    if (overlap < 0 || overlap >= std::min(tile_h, tile_w))
        throw std::invalid_argument("overlap must lie in 0.." + std::to_string(std::min(tile_h, tile_w) - 1) + " px");
    if (trim < 0 || trim > overlap / 2) throw std::invalid_argument("trim must lie in 0..overlap/2 px");
    Images padded = reflect_pad(images, count, height, width, std::max(height, tile_h), std::max(width, tile_w));
    int64_t full_h = padded.height, full_w = padded.width;
    std::vector<float> base = importance_map(tile_h, tile_w, blend);
    std::vector<std::pair<int64_t, int64_t>> starts;
    for (int64_t r : window_starts(full_h, tile_h, overlap))
        for (int64_t c : window_starts(full_w, tile_w, overlap)) starts.emplace_back(r, c);
    std::map<std::pair<int64_t, int64_t>, std::vector<float>> weights;
    for (const auto& [r, c] : starts) weights[{r, c}] = trimmed(base, r, c, tile_h, tile_w, full_h, full_w, trim);
    std::vector<float> output(padded.data.size(), 0.0f), total(static_cast<size_t>(full_h * full_w), 0.0f);
    for (const auto& [r, c] : starts) {  // the weight sum is the same for every image
        const std::vector<float>& weight = weights[{r, c}];
        for (int64_t y = 0; y < tile_h; ++y)
            for (int64_t x = 0; x < tile_w; ++x) total[static_cast<size_t>((r + y) * full_w + c + x)] += weight[static_cast<size_t>(y * tile_w + x)];
    }
    struct Window { int64_t image, row, col; };
    std::vector<Window> windows;
    for (int64_t i = 0; i < count; ++i)
        for (const auto& [r, c] : starts) windows.push_back({i, r, c});
    const int64_t tile_size = tile_h * tile_w;
    std::vector<float> batch;
    for (size_t first = 0; first < windows.size(); first += static_cast<size_t>(batch_size)) {
        size_t n = std::min(windows.size() - first, static_cast<size_t>(batch_size));
        batch.assign(n * static_cast<size_t>(tile_size), 0.0f);
        for (size_t k = 0; k < n; ++k) {
            const Window& win = windows[first + k];
            for (int64_t y = 0; y < tile_h; ++y) {
                const float* source = padded.data.data() + (win.image * full_h + win.row + y) * full_w + win.col;
                std::copy(source, source + tile_w, batch.data() + k * static_cast<size_t>(tile_size) + static_cast<size_t>(y * tile_w));
            }
        }
        std::vector<float> result = predictor(batch.data(), static_cast<int64_t>(n), tile_h, tile_w);
        if (result.size() != batch.size()) throw std::runtime_error("the predictor returned another shape than its tiles");
        for (size_t k = 0; k < n; ++k) {
            const Window& win = windows[first + k];
            const std::vector<float>& weight = weights[{win.row, win.col}];
            for (int64_t y = 0; y < tile_h; ++y)
                for (int64_t x = 0; x < tile_w; ++x) {
                    float product = result[k * static_cast<size_t>(tile_size) + static_cast<size_t>(y * tile_w + x)] *
                                    weight[static_cast<size_t>(y * tile_w + x)];
                    output[static_cast<size_t>((win.image * full_h + win.row + y) * full_w + win.col + x)] += product;
                }
        }
    }
    Images out;
    out.count = count;
    out.height = height;
    out.width = width;
    out.data.resize(static_cast<size_t>(count * height * width));
    for (int64_t i = 0; i < count; ++i)
        for (int64_t y = 0; y < height; ++y)
            for (int64_t x = 0; x < width; ++x) {
                size_t at = static_cast<size_t>((i * full_h + y) * full_w + x);
                out.data[static_cast<size_t>((i * height + y) * width + x)] = output[at] / total[static_cast<size_t>(y * full_w + x)];
            }
    return out;
}

}  // namespace recon::tiling
