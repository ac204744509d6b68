#include "inputs.hpp"

#include <cmath>
#include <cstdio>
#include <limits>

#include "json_strict.hpp"
#include "manifest.hpp"

namespace recon::inputs {
namespace {

std::string side(const std::optional<int64_t>& d, const char* name) { return d ? std::to_string(*d) : name; }

std::string shape_text(const Rules& r, int rank) {
    std::string h = side(r.hw[0], "H"), w = side(r.hw[1], "W");
    if (rank == 2) return "(" + h + ", " + w + ")";
    if (rank == 3) return "(B, " + h + ", " + w + ")";
    return "(B, 1, " + h + ", " + w + ")";
}

std::string ranks_text(const Rules& r) {
    return "(H, W), (B, H, W) or (B, 1, H, W) with (H, W) = " + shape_text(r, 2);
}

std::string tuple_text(const std::vector<int64_t>& shape) {  // Python's repr of a shape tuple
    std::string text = "(";
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + (shape.size() == 1 ? ",)" : ")");
}

std::string fmt(const char* format, double value) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, format, value);
    return buffer;
}

const char* dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::u8: return "uint8";
        case DType::i8: return "int8";
        case DType::u16: return "uint16";
        case DType::i16: return "int16";
        case DType::u32: return "uint32";
        case DType::i32: return "int32";
    }
    return "?";
}

template <typename T>
void scale_into(const void* data, size_t n, std::vector<float>& out) {
    // numpy: multiply(x, float32(1 / iinfo.max), dtype=float32): cast to float32, then one float32 product
    const float scale = static_cast<float>(1.0 / static_cast<double>(std::numeric_limits<T>::max()));
    const T* x = static_cast<const T*>(data);
    out.resize(n);
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i]) * scale;
}

std::string range_list(const std::pair<double, double>& range) {
    return "[" + json::py_float(range.first) + ", " + json::py_float(range.second) + "]";
}

}  // namespace

Batch prepare(const void* data, DType dtype, const std::vector<int64_t>& given, const Rules& rules) {
    const std::string& what = rules.what;
    int rank = static_cast<int>(given.size());
    for (int64_t d : given)
        if (d < 0) throw InputError(what + " shape " + tuple_text(given) + " has a negative side");
    std::vector<int64_t> shape = given;
    if (rank == 2) shape = {1, 1, given[0], given[1]};
    else if (rank == 3) shape = {given[0], 1, given[1], given[2]};
    else if (rank != 4 || given[1] != 1)
        throw InputError(what + " array has shape " + tuple_text(given) + "; expected " + ranks_text(rules));
    if (shape[0] == 0)
        throw InputError("empty batch: got " + what + " shape " + tuple_text(given) + "; pass at least one " + what);
    for (size_t i = 0; i < 2; ++i)
        if (rules.hw[i] && shape[2 + i] != *rules.hw[i])
            throw InputError(what + " shape " + tuple_text(given) + " does not fit this artifact; expected " +
                             shape_text(rules, rank) + " (that is " + ranks_text(rules) + ")");
    Batch batch;
    batch.count = shape[0];
    batch.height = shape[2];
    batch.width = shape[3];
    batch.rank = rank;
    if (batch.height > artifact::kMaxImageSide || batch.width > artifact::kMaxImageSide ||
        batch.height * batch.width > artifact::kMaxImagePixels || batch.count > (int64_t{1} << 40) / std::max<int64_t>(1, batch.height * batch.width))
        throw InputError(what + " of " + std::to_string(batch.height) + "×" + std::to_string(batch.width) +
                         " px exceeds the runtime's caps (" + std::to_string(artifact::kMaxImageSide) + " px per side, " +
                         std::to_string(artifact::kMaxImagePixels) + " px in all; recon.runtime.limits)");
    size_t n = static_cast<size_t>(batch.count * batch.height * batch.width);
    bool integer = dtype != DType::f32 && dtype != DType::f64;
    if (integer && !rules.scale_integers) {
        std::string expected = rules.value_range ? " in its input range " + range_list(*rules.value_range) : "";
        throw InputError("integer " + what + "s (" + dtype_name(dtype) +
                         ") have no known scale for this artifact; convert them to floats in the units it was trained on" +
                         expected + " (e.g. line integrals, not fixed-point counts)");
    }
    switch (dtype) {
        case DType::f32: batch.data = static_cast<const float*>(data); break;  // used in place, no copy
        case DType::f64: {
            const double* x = static_cast<const double*>(data);
            batch.owned.resize(n);
            for (size_t i = 0; i < n; ++i) batch.owned[i] = static_cast<float>(x[i]);  // beyond float32: ±Inf
            break;
        }
        case DType::u8: scale_into<uint8_t>(data, n, batch.owned); break;
        case DType::i8: scale_into<int8_t>(data, n, batch.owned); break;
        case DType::u16: scale_into<uint16_t>(data, n, batch.owned); break;
        case DType::i16: scale_into<int16_t>(data, n, batch.owned); break;
        case DType::u32: scale_into<uint32_t>(data, n, batch.owned); break;
        case DType::i32: scale_into<int32_t>(data, n, batch.owned); break;
    }
    if (dtype != DType::f32) batch.data = batch.owned.data();
    float low = INFINITY, high = -INFINITY;
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        float v = batch.data[i];
        if (!std::isfinite(v)) ++bad;
        low = std::min(low, v);
        high = std::max(high, v);
    }
    if (bad)
        throw InputError(what + " holds " + std::to_string(bad) +
                         " NaN/Inf value(s) (after conversion to float32); replace them before reconstruction");
    batch.low = low;
    batch.high = high;
    if (rules.value_range) {
        auto [lo, hi] = *rules.value_range;
        double span = hi - lo;
        if (low < lo - span || high > hi + span)
            throw InputError(what + " values span [" + fmt("%.6g", low) + ", " + fmt("%.6g", high) +
                             "], far outside the artifact's input range [" + fmt("%g", lo) + ", " + fmt("%g", hi) +
                             "]; scale them into it first (integers are divided by their dtype's maximum; 8-bit floats "
                             "need /255)");
    }
    return batch;
}

std::pair<float, float> check_output(const std::vector<float>& output, const Batch& batch, const Rules& rules) {
    float low = INFINITY, high = -INFINITY;
    size_t bad = 0;
    for (float v : output) {
        if (!std::isfinite(v)) ++bad;
        low = std::min(low, v);
        high = std::max(high, v);
    }
    if (!bad) return {low, high};
    std::string expected = rules.value_range ? " " + range_list(*rules.value_range) : "";
    throw InputError("the network produced " + std::to_string(bad) + " NaN/Inf value(s) for " + rules.what +
                     "s with values in [" + fmt("%.6g", batch.low) + ", " + fmt("%.6g", batch.high) +
                     "]; inputs that far outside the range the artifact was trained on overflow inside it, scale them "
                     "to its input value range" + expected);
}

}  // namespace recon::inputs
