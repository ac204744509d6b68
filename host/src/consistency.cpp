#include "consistency.hpp"

#include <cmath>
#include <cstdio>

namespace recon::consistency {
namespace {

std::string fmt4(double value) {  // Python's f"{value:.4g}"
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.4g", value);
    return buffer;
}

}  // namespace

Guard::Guard(const std::string& directory, const artifact::Manifest& manifest, int threads) {
    if (!manifest.consistency)
        throw ArtifactError(directory + ": the artifact carries no consistency check; re-export it");
    entry_ = *manifest.consistency;
    std::string path = artifact::join(directory, entry_.file);
    // the very bytes loaded are hashed, read without following links, bounded by the listed size, and
    // self-contained: OpenVINO would read a tensor kept as external data from elsewhere, unhashed
    std::string graph = artifact::read_verified(directory, manifest, entry_.file);
    artifact::check_self_contained(path, graph);
    try {
        ov::Core core;
        auto model = core.read_model(graph, ov::Tensor());
        ov::AnyMap config = engine::compile_config(threads);
        auto dynamic = core.compile_model(model, "CPU", config);
        shapes_ = std::make_unique<engine::CompiledShapes>(core, model, config, std::move(dynamic));
    } catch (const std::exception& error) {
        throw ArtifactError(path + ": openvino cannot load the consistency graph (" + engine::first_line(error) + ")");
    }
}

std::vector<Score> Guard::score(const float* images, const std::vector<int64_t>& image_shape, const float* measurements,
                                const std::vector<int64_t>& measurement_shape) {
    const int64_t n = image_shape[0];
    const int64_t image_size = image_shape[1] * image_shape[2] * image_shape[3];
    const int64_t measurement_size = measurement_shape[1] * measurement_shape[2] * measurement_shape[3];
    const int64_t per_image = std::max<int64_t>({1, image_size, measurement_size});
    const int64_t step = std::max<int64_t>(1, std::min(max_batch_, max_pixels_ / per_image));
    const size_t columns = entry_.statistics.size();
    std::vector<double> table;
    for (int64_t lo = 0; lo < n; lo += step) {
        int64_t count = std::min(step, n - lo);
        std::vector<int64_t> image_dims = {count, image_shape[1], image_shape[2], image_shape[3]};
        std::vector<int64_t> measurement_dims = {count, measurement_shape[1], measurement_shape[2], measurement_shape[3]};
        std::vector<int64_t> key = image_dims;
        key.insert(key.end(), measurement_dims.begin(), measurement_dims.end());
        auto to_shape = [](const std::vector<int64_t>& d) { return ov::Shape(d.begin(), d.end()); };
        size_t rows_before = table.size();
        try {
            engine::Entry& entry = shapes_->get(key, {{entry_.image_input, ov::PartialShape(image_dims)},
                                                      {entry_.measurement_input, ov::PartialShape(measurement_dims)}});
            engine::BorrowedRequest request(entry);
            request->set_tensor(entry_.image_input, ov::Tensor(ov::element::f32, to_shape(image_dims),
                                                               const_cast<float*>(images + lo * image_size)));
            request->set_tensor(entry_.measurement_input,
                                ov::Tensor(ov::element::f32, to_shape(measurement_dims),
                                           const_cast<float*>(measurements + lo * measurement_size)));
            request->infer();
            ov::Tensor out = request->get_tensor(entry_.output);
            ov::Shape shape = out.get_shape();
            if (shape.size() != 2 || static_cast<int64_t>(shape[0]) != count || shape[1] != columns) {
                std::string got = "(";
                for (size_t i = 0; i < shape.size(); ++i) got += (i ? ", " : "") + std::to_string(shape[i]);
                throw ArtifactError("the consistency graph returned shape " + got + (shape.size() == 1 ? ",)" : ")") +
                                    ", expected (" + std::to_string(count) + ", " + std::to_string(columns) +
                                    "); re-export the artifact");
            }
            if (out.get_element_type() == ov::element::f32) {
                const float* values = out.data<const float>();
                table.insert(table.end(), values, values + out.get_size());
            } else if (out.get_element_type() == ov::element::f64) {
                const double* values = out.data<const double>();
                table.insert(table.end(), values, values + out.get_size());
            } else {
                throw std::runtime_error("scores of type " + out.get_element_type().get_type_name());
            }
        } catch (const ArtifactError&) {
            throw;
        } catch (const std::exception& error) {
            table.resize(rows_before);
            throw BackendError("consistency check: openvino failed to run its graph (" + engine::first_line(error) + ")");
        }
    }
    std::vector<Score> scores;
    for (int64_t i = 0; i < n; ++i)
        scores.push_back(judge(std::vector<double>(table.begin() + i * static_cast<int64_t>(columns),
                                                   table.begin() + (i + 1) * static_cast<int64_t>(columns))));
    return scores;
}

Score Guard::judge(const std::vector<double>& row) const {
    Score score;
    for (size_t i = 0; i < row.size(); ++i) score.statistics.emplace_back(entry_.statistics[i], row[i]);
    auto value_of = [&](const std::string& name) {
        for (const auto& [stat, value] : score.statistics)
            if (stat == name) return value;
        return static_cast<double>(NAN);
    };
    for (const auto& [stat, bound] : entry_.bounds) {
        double value = value_of(stat);
        if (!std::isfinite(value)) {
            score.reasons.push_back(stat + " is " + json::py_float(value));
            continue;
        }
        if ((bound.check == "lower" || bound.check == "both") && value < bound.low)
            score.reasons.push_back(stat + " " + fmt4(value) + " < " + fmt4(bound.low));
        if ((bound.check == "upper" || bound.check == "both") && value > bound.high)
            score.reasons.push_back(stat + " " + fmt4(value) + " > " + fmt4(bound.high));
    }
    score.residual = value_of("residual");
    score.flagged = !score.reasons.empty();
    return score;
}

}  // namespace recon::consistency
