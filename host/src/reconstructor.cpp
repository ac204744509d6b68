// recon::Reconstructor: recon.runtime.reconstructor.Reconstructor in C++ (the same plan, checks and order).
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "consistency.hpp"
#include "engine.hpp"
#include "golden.hpp"
#include "inputs.hpp"
#include "manifest.hpp"
#include "recon/recon.hpp"
#include "tiling.hpp"

namespace recon {

using artifact::Spatial;
using json::Json;
using json::py_repr;

struct Reconstructor::Impl {
    std::string directory;
    artifact::Manifest manifest;
    std::unique_ptr<engine::Network> network;
    std::unique_ptr<consistency::Guard> guard;
    std::optional<std::pair<double, double>> clip_range;
    std::optional<Spatial> spatial;
    bool tile_cap = false;
    inputs::Rules rules;
    int min_batch = 1, max_batch = 1;
    // close() waits for runs in flight, then frees the engine; later runs throw ClosedError
    std::mutex lifecycle;
    std::condition_variable idle;
    int in_flight = 0;
    bool closed = false;

    Spatial choose_spatial(const Options& options);
    std::string plan(int64_t h, int64_t w) const;
    std::pair<int64_t, int64_t> padded_size(int64_t h, int64_t w) const;
    std::vector<float> infer_batches(const float* batch, int64_t n, int64_t h, int64_t w, int64_t& out_h, int64_t& out_w);
    std::vector<float> infer(const float* batch, int64_t n, int64_t h, int64_t w, int64_t& out_h, int64_t& out_w);
    std::vector<float> reconstruct(const inputs::Batch& batch, int64_t& out_h, int64_t& out_w);
    Result run(const void* data, DType dtype, const std::vector<int64_t>& shape);
};

Spatial Reconstructor::Impl::choose_spatial(const Options& o) {
    Spatial base = artifact::parse_spatial(*manifest.spatial_json);
    Json values = *manifest.spatial_json;
    if (o.tile) {
        int tile = *o.tile;
        if (!base.whole_image && tile != base.tile)
            throw OptionError("tile=" + std::to_string(tile) + ": " + py_repr(Json(manifest.name)) + " takes only tiles of " +
                              std::to_string(base.tile) + "×" + std::to_string(base.tile) +
                              " (its graph has a fixed size); leave tile unset");
        if (tile < base.min || tile > base.max)
            throw OptionError("tile must be an integer side in " + std::to_string(base.min) + ".." + std::to_string(base.max) +
                              " px, got " + std::to_string(tile));
        if (tile % base.multiple_of)
            throw OptionError("tile must be a multiple of " + std::to_string(base.multiple_of) + ", got " + std::to_string(tile));
        values["tile"] = tile;
        if (!o.overlap) values["overlap"] = std::min(base.overlap, tile / 2);  // the manifest's may not fit a smaller tile
    }
    if (o.overlap) values["overlap"] = *o.overlap;
    if (o.blend) values["blend"] = *o.blend;
    try {
        return artifact::parse_spatial(values);
    } catch (const artifact::SpatialError& error) {
        throw OptionError(std::string(error.what()) + " (tile " + std::to_string(values["tile"].get<int>()) +
                          "; blend one of ['gaussian', 'cosine'])");
    }
}

std::pair<int64_t, int64_t> Reconstructor::Impl::padded_size(int64_t h, int64_t w) const {
    auto up = [&](int64_t side) {
        int64_t m = spatial->multiple_of;
        return (std::max<int64_t>(side, spatial->min) + m - 1) / m * m;
    };
    return {up(h), up(w)};
}

std::string Reconstructor::Impl::plan(int64_t h, int64_t w) const {
    if (!spatial) return "whole";
    if (tile_cap && std::max(h, w) > spatial->tile) return "tiled";
    if (!spatial->whole_image) return (h == spatial->tile && w == spatial->tile) ? "whole" : "tiled";
    auto [ph, pw] = padded_size(h, w);
    if (std::max(ph, pw) > spatial->max) return "tiled";
    return (ph == h && pw == w) ? "whole" : "padded";
}

std::vector<float> Reconstructor::Impl::infer(const float* batch, int64_t n, int64_t h, int64_t w, int64_t& out_h, int64_t& out_w) {
    std::vector<int64_t> shape;
    std::vector<float> output = network->infer(batch, n, h, w, shape);
    // held to the shape the manifest promises (a symbolic output side takes any size)
    std::array<std::optional<int64_t>, 2> expected = spatial ? std::array<std::optional<int64_t>, 2>{h, w} : manifest.output.hw;
    bool ok = shape.size() == 4 && shape[0] == n && shape[1] == 1 && (!expected[0] || shape[2] == *expected[0]) &&
              (!expected[1] || shape[3] == *expected[1]);
    if (!ok) {
        std::string got = "(";
        for (size_t i = 0; i < shape.size(); ++i) got += (i ? ", " : "") + std::to_string(shape[i]);
        auto side = [](const std::optional<int64_t>& d, const char* name) { return d ? std::to_string(*d) : std::string(name); };
        throw ArtifactError(directory + ": the openvino graph returned shape " + got + ") for a batch of " + std::to_string(n) +
                            ", the manifest promises (" + std::to_string(n) + ", 1, " + side(manifest.output.hw[0], "H") +
                            ", " + side(manifest.output.hw[1], "W") + "); re-export the artifact");
    }
    out_h = shape[2];
    out_w = shape[3];
    return output;
}

std::vector<float> Reconstructor::Impl::infer_batches(const float* batch, int64_t n, int64_t h, int64_t w, int64_t& out_h,
                                                      int64_t& out_w) {
    if (min_batch <= n && n <= max_batch) return infer(batch, n, h, w, out_h, out_w);
    std::vector<float> output;
    const int64_t in_size = h * w;
    for (int64_t first = 0; first < n; first += max_batch) {
        int64_t size = std::min<int64_t>(max_batch, n - first);
        std::vector<float> chunk(batch + first * in_size, batch + (first + size) * in_size);
        int64_t run = std::max<int64_t>(size, min_batch);  // padded with zeros up to the profile's minimum
        chunk.resize(static_cast<size_t>(run * in_size), 0.0f);
        std::vector<float> result = infer(chunk.data(), run, h, w, out_h, out_w);
        if (output.empty()) output.resize(static_cast<size_t>(n * out_h * out_w));
        std::copy(result.begin(), result.begin() + size * out_h * out_w, output.begin() + first * out_h * out_w);
    }
    return output;
}

std::vector<float> Reconstructor::Impl::reconstruct(const inputs::Batch& batch, int64_t& out_h, int64_t& out_w) {
    const int64_t n = batch.count, h = batch.height, w = batch.width;
    std::string how = plan(h, w);
    if (how == "whole") return infer_batches(batch.data, n, h, w, out_h, out_w);
    if (how == "padded") {
        auto [ph, pw] = padded_size(h, w);
        tiling::Images padded = tiling::reflect_pad(batch.data, n, h, w, ph, pw);
        int64_t got_h = 0, got_w = 0;
        std::vector<float> full = infer_batches(padded.data.data(), n, ph, pw, got_h, got_w);
        std::vector<float> cropped(static_cast<size_t>(n * h * w));
        for (int64_t i = 0; i < n; ++i)
            for (int64_t y = 0; y < h; ++y)
                std::copy_n(full.begin() + (i * got_h + y) * got_w, w, cropped.begin() + (i * h + y) * w);
        out_h = h;
        out_w = w;
        return cropped;
    }
    int64_t tile_h = spatial->tile, tile_w = spatial->tile;
    if (spatial->whole_image) {  // a whole-image graph takes narrower tiles for a narrow image
        auto [ph, pw] = padded_size(h, w);
        tile_h = std::min<int64_t>(spatial->tile, ph);
        tile_w = std::min<int64_t>(spatial->tile, pw);
    }
    auto predictor = [&](const float* tiles, int64_t count, int64_t th, int64_t tw) {
        int64_t oh = 0, ow = 0;
        return infer_batches(tiles, count, th, tw, oh, ow);
    };
    // a finite receptive field: drop tile borders, so tiles agree with the whole image (runtime/tiling.py)
    int64_t trim = spatial->receptive_field ? spatial->overlap / 2 : 0;
    tiling::Images out = tiling::sliding_window(batch.data, n, h, w, predictor, tile_h, tile_w, spatial->overlap, max_batch,
                                                spatial->blend, trim);
    out_h = h;
    out_w = w;
    return std::move(out.data);
}

Result Reconstructor::Impl::run(const void* data, DType dtype, const std::vector<int64_t>& shape) {
    inputs::Batch batch = inputs::prepare(data, dtype, shape, rules);
    int64_t out_h = 0, out_w = 0;
    std::vector<float> output = reconstruct(batch, out_h, out_w);
    auto [low, high] = inputs::check_output(output, batch, rules);
    if (clip_range && !(clip_range->first <= low && high <= clip_range->second)) {
        const float lo = static_cast<float>(clip_range->first), hi = static_cast<float>(clip_range->second);
        for (float& v : output) v = std::min(std::max(v, lo), hi);
    }
    Result result;
    if (guard)
        result.scores = guard->score(output.data(), {batch.count, 1, out_h, out_w}, batch.data,
                                     {batch.count, 1, batch.height, batch.width});
    if (batch.rank == 2) result.shape = {out_h, out_w};
    else if (batch.rank == 3) result.shape = {batch.count, out_h, out_w};
    else result.shape = {batch.count, 1, out_h, out_w};
    result.images = std::move(output);
    return result;
}

Reconstructor::Reconstructor(const std::string& artifact_dir, const Options& options) : impl_(std::make_unique<Impl>()) {
    Impl& s = *impl_;
    s.directory = artifact::clean_directory(artifact_dir);
    s.manifest = artifact::load_manifest(s.directory, true);
    const artifact::Manifest& m = s.manifest;
    s.network = std::make_unique<engine::Network>(s.directory, m, options.precision, options.threads);
    if (options.consistency && m.consistency) s.guard = std::make_unique<consistency::Guard>(s.directory, m, options.threads);
    bool clip = options.clip.value_or(m.output.clip);
    if (clip && m.output.value_range) s.clip_range = m.output.value_range;
    s.min_batch = std::max(1, m.batch.min);
    s.max_batch = m.batch.max;
    s.rules.what = m.task == "ct" ? "sinogram" : "image";
    s.rules.value_range = m.input.value_range;
    // integers are scaled by their type's maximum for images; a sinogram's integers have no known scale
    s.rules.scale_integers = m.task != "ct";
    if (!m.spatial_json || s.rules.what != "image") {
        if (options.tile || options.overlap || options.blend)
            throw OptionError(s.directory + ": this artifact has no spatial entry (a CT artifact, or exported before images "
                              "of any size), so tile/overlap/blend do not apply; re-export it with recon-export");
        s.rules.hw = m.input.hw;
    } else {
        s.spatial = s.choose_spatial(options);
        s.tile_cap = options.tile.has_value();  // a caller's tile is a cap: anything larger is tiled
    }
}

Reconstructor::~Reconstructor() {
    if (impl_) close();
}

Result Reconstructor::run(const float* data, const std::vector<int64_t>& shape) const {
    return run(static_cast<const void*>(data), DType::f32, shape);
}

Result Reconstructor::run(const void* data, DType dtype, const std::vector<int64_t>& shape) const {
    Impl& s = *impl_;
    {
        std::lock_guard<std::mutex> hold(s.lifecycle);
        if (s.closed) throw ClosedError("this Reconstructor is closed; create a new one");
        ++s.in_flight;
    }
    struct Leave {
        Impl& s;
        ~Leave() {
            std::lock_guard<std::mutex> hold(s.lifecycle);
            if (--s.in_flight == 0 && s.closed) s.idle.notify_all();
        }
    } leave{s};
    return s.run(data, dtype, shape);
}

void Reconstructor::close() {
    Impl& s = *impl_;
    std::unique_lock<std::mutex> hold(s.lifecycle);
    s.closed = true;
    s.idle.wait(hold, [&] { return s.in_flight == 0; });
    s.guard.reset();
    s.network.reset();
}

std::string Reconstructor::size_plan(int64_t height, int64_t width) const { return impl_->plan(height, width); }

std::array<int64_t, 4> Reconstructor::input_shape(int64_t batch) const {
    const Impl& s = *impl_;
    int64_t fallback = s.spatial ? s.spatial->opt : 256;
    return {batch, 1, s.manifest.input.hw[0].value_or(fallback), s.manifest.input.hw[1].value_or(fallback)};
}

std::string Reconstructor::task() const { return impl_->manifest.task; }
std::string Reconstructor::name() const { return impl_->manifest.name; }
std::string Reconstructor::model_file() const { return impl_->network ? impl_->network->file() : ""; }
std::string Reconstructor::precision() const { return impl_->network ? impl_->network->precision() : ""; }
bool Reconstructor::scores_outputs() const { return impl_->guard != nullptr; }

Verification Reconstructor::verify() const {
    const Impl& s = *impl_;
    if (!s.manifest.golden_json) {
        Verification none;
        none.backend = "openvino";
        none.precision = precision();
        none.reason = "the artifact (format v" + std::to_string(s.manifest.format_version) +
                      ") carries no golden outputs; re-export it with this recon to qualify it";
        return none;
    }
    golden::Set set = golden::load(s.directory, s.manifest);
    Result outputs = run(set.inputs.values.data(), set.inputs.shape);
    return golden::compare(set, outputs, s.manifest, "openvino", precision());
}

void verify_artifact(const std::string& artifact_dir) { artifact::load_manifest(artifact_dir, true); }

std::string version() { return RECON_HOST_VERSION; }

}  // namespace recon
