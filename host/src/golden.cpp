#include "golden.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <regex>

namespace recon::golden {
namespace {

using artifact::Json;
using json::py_repr;

constexpr int64_t kMaxGoldenImages = 64;  // artifact/golden.py's MAX_GOLDEN_IMAGES

const Json* get(const Json& object, const std::string& key) {
    auto found = object.find(key);
    return found == object.end() ? nullptr : &*found;
}

bool finite(const Json* value) { return value && value->is_number() && std::isfinite(value->get<double>()); }

// golden.py's check_golden_entry, message for message.
void check_entry(const Json& entry, const artifact::Manifest& manifest, const std::string& source) {
    auto fail = [&](const std::string& what) {
        throw ArtifactError(source + ": golden entry " + what + "; re-export the artifact");
    };
    if (!entry.is_object()) fail("must be a JSON object, got " + py_repr(entry));
    for (const char* role : {"inputs", "outputs"}) {
        const Json* name = get(entry, role);
        auto listed = std::find_if(manifest.files.begin(), manifest.files.end(), [&](const auto& f) {
            return name && name->is_string() && f.first == name->get<std::string>();
        });
        if (listed == manifest.files.end())
            fail(std::string("names ") + role + " file " + py_repr(name ? *name : Json(nullptr)) +
                 ", which the manifest's files do not list");
        if (listed->second.kind != "golden")
            fail(std::string(role) + " file " + py_repr(*name) + " is listed with kind " +
                 py_repr(Json(listed->second.kind)) + ", not 'golden'");
    }
    const Json* table = get(entry, "tolerances");
    if (!(table && table->is_object() && !table->empty()))
        fail("needs 'tolerances' (backend/precision -> max_abs, min_psnr), got " + py_repr(table ? *table : Json(nullptr)));
    for (const auto& [key, value] : table->items()) {
        if (std::count(key.begin(), key.end(), '/') != 1) fail("tolerance key " + py_repr(Json(key)) + " must read 'backend/precision'");
        const Json* max_abs = value.is_object() ? get(value, "max_abs") : nullptr;
        if (!(finite(max_abs) && max_abs->get<double>() >= 0))
            fail("tolerance " + py_repr(Json(key)) + " needs a finite max_abs >= 0, got " + py_repr(value));
        if (!finite(get(value, "min_psnr")))
            fail("tolerance " + py_repr(Json(key)) + " needs a finite min_psnr, got " + py_repr(value));
    }
    const Json* scores = get(entry, "scores");
    if (scores && !scores->is_null() && !scores->is_array())
        fail("scores must be a list or null, got " + py_repr(*scores));
}

// A float32 (N, 1, H, W) NPY array from bytes already checked against the manifest's sha256.
Array parse(const std::string& path, const std::string& data) {
    auto unreadable = [&](const std::string& why) {
        throw ArtifactError(path + ": not a readable .npy array (" + why + "); re-export");
    };
    if (data.size() < 10 || std::memcmp(data.data(), "\x93NUMPY", 6) != 0) unreadable("no NPY magic");
    int major = static_cast<unsigned char>(data[6]);
    size_t at = major == 1 ? 10 : 12;
    if (major < 1 || major > 3 || data.size() < at) unreadable("NPY version " + std::to_string(major));
    auto byte = [&](size_t i) { return static_cast<size_t>(static_cast<unsigned char>(data[i])); };
    size_t header_len = major == 1 ? byte(8) | byte(9) << 8 : byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
    if (header_len > data.size() - at) unreadable("truncated header");
    std::string header = data.substr(at, header_len);
    std::smatch descr, order, shape;
    if (!std::regex_search(header, descr, std::regex("'descr':\\s*'([^']*)'")) ||
        !std::regex_search(header, order, std::regex("'fortran_order':\\s*(True|False)")) ||
        !std::regex_search(header, shape, std::regex("'shape':\\s*\\(([0-9,\\s]*)\\)")))
        unreadable("unreadable header");
    Array array;
    std::string dims = shape[1];
    std::regex number("[0-9]+");
    for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it)
        array.shape.push_back(it->str().size() > 9 ? std::numeric_limits<int32_t>::max() : std::stoll(it->str()));
    bool ok = descr[1] == "<f4" && order[1] == "False" && array.shape.size() == 4 && array.shape[1] == 1 &&
              array.shape[0] >= 1 && array.shape[0] <= kMaxGoldenImages;
    uint64_t count = 1;
    for (int64_t d : array.shape) count *= static_cast<uint64_t>(std::min<int64_t>(d, 1 << 20));
    if (ok && count * 4 != data.size() - at - header_len) unreadable("data does not match its shape");
    if (ok) {
        array.values.resize(count);
        std::memcpy(array.values.data(), data.data() + at + header_len, count * 4);
        ok = std::all_of(array.values.begin(), array.values.end(), [](float v) { return std::isfinite(v); });
    }
    if (!ok) {
        std::string type = descr[1] == "<f4" ? "float32" : descr[1] == "<f8" ? "float64" : descr[1].str();  // numpy's name
        std::string got = type + " (";
        for (size_t i = 0; i < array.shape.size(); ++i) got += (i ? ", " : "") + std::to_string(array.shape[i]);
        if (array.shape.size() == 1) got += ",";  // Python's repr of a 1-tuple
        throw ArtifactError(path + ": golden arrays must be finite float32 (N, 1, H, W) with N <= " +
                            std::to_string(kMaxGoldenImages) + ", got " + got + "); re-export the artifact");
    }
    return array;
}

std::string g3(double value) {  // Python's f"{value:.3g}"
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    char text[64];
    std::snprintf(text, sizeof text, "%.3g", value);
    return text;
}

std::string f2(double value) {  // Python's f"{value:.2f}"
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    char text[64];
    std::snprintf(text, sizeof text, "%.2f", value);
    return text;
}

}  // namespace

Set load(const std::string& directory, const artifact::Manifest& manifest) {
    const Json& entry = *manifest.golden_json;
    std::string source = artifact::join(directory, "manifest.json");
    check_entry(entry, manifest, source);
    Set set;
    for (auto [role, array] : {std::pair{"inputs", &set.inputs}, std::pair{"outputs", &set.outputs}}) {
        std::string name = entry[role].get<std::string>();
        *array = parse(artifact::join(directory, name), artifact::read_verified(directory, manifest, name));
    }
    if (set.inputs.shape[0] != set.outputs.shape[0])
        throw ArtifactError(source + ": golden inputs hold " + std::to_string(set.inputs.shape[0]) + " images, outputs " +
                            std::to_string(set.outputs.shape[0]) + "; re-export");
    return set;
}

Verification compare(const Set& set, const Result& outputs, const artifact::Manifest& manifest,
                     const std::string& backend, const std::string& precision) {
    Verification result;
    result.backend = backend;
    result.precision = precision;
    result.images = set.outputs.shape[0];
    const std::vector<int64_t>& want = set.outputs.shape;
    if (outputs.shape != want) {
        auto tuple = [](const std::vector<int64_t>& s) {
            std::string t = "(";
            for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
            return t + (s.size() == 1 ? ",)" : ")");
        };
        result.reason = "outputs have shape " + tuple(outputs.shape) + ", the references " + tuple(want) +
                        ": the artifact's graph no longer gives the validated images";
        return result;
    }
    const size_t per = set.outputs.values.size() / static_cast<size_t>(result.images);
    double worst = -1, squares = 0;
    for (int64_t i = 0; i < result.images; ++i) {
        double image_max = 0;
        for (size_t j = i * per; j < (i + 1) * per; ++j) {
            double e = std::abs(static_cast<double>(outputs.images[j]) - static_cast<double>(set.outputs.values[j]));
            image_max = std::max(image_max, e);
            squares += e * e;
        }
        if (image_max > worst) {
            worst = image_max;
            result.worst_image = i;
        }
    }
    result.max_abs = worst;
    double peak = manifest.output.value_range ? manifest.output.value_range->second - manifest.output.value_range->first : 1.0;
    double mse = squares / static_cast<double>(set.outputs.values.size());
    result.psnr = mse == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(peak * peak / mse);
    // the tolerance of this backend/precision, or the loosest measured at the same precision (golden.py)
    const Json& table = manifest.golden_json->contains("tolerances") ? (*manifest.golden_json)["tolerances"] : Json::object();
    std::string key = backend + "/" + precision, chosen;
    if (table.contains(key)) chosen = key;
    for (const auto& [k, v] : table.items())
        if (chosen != key && k.substr(k.rfind('/') + 1) == precision &&
            (chosen.empty() || v["max_abs"].get<double>() > table[chosen]["max_abs"].get<double>()))
            chosen = k;
    if (chosen.empty()) {
        std::string measured;
        for (const auto& [k, v] : table.items()) measured += (measured.empty() ? "" : ", ") + k;
        result.reason = "the artifact holds no tolerance for " + precision + " (measured at export: " + measured +
                        "); re-export on a machine that runs " + precision;
        return result;
    }
    result.tolerance_key = chosen;
    result.tolerance_max_abs = table[chosen]["max_abs"].get<double>();
    result.tolerance_min_psnr = table[chosen]["min_psnr"].get<double>();
    const Json* reference = get(*manifest.golden_json, "scores");
    if (reference && reference->is_array() && !reference->empty() && reference->size() == outputs.scores.size())
        for (size_t i = 0; i < outputs.scores.size(); ++i) {
            const Json& then = (*reference)[i];
            const Json* was = then.is_object() ? get(then, "flagged") : nullptr;
            bool was_flagged = was && (was->is_boolean() ? was->get<bool>() : !was->is_null());
            if (outputs.scores[i].flagged && !was_flagged) result.flagged.push_back(static_cast<int64_t>(i));
        }
    std::vector<std::string> problems;
    if (*result.max_abs > result.tolerance_max_abs)
        problems.push_back("max |error| " + g3(*result.max_abs) + " > " + g3(result.tolerance_max_abs) + " (image " +
                           std::to_string(result.worst_image) + ")");
    if (*result.psnr < result.tolerance_min_psnr)
        problems.push_back("PSNR " + f2(*result.psnr) + " dB < " + f2(result.tolerance_min_psnr) + " dB");
    if (!result.flagged.empty()) {
        std::string list = "[";
        for (size_t i = 0; i < result.flagged.size(); ++i) list += (i ? ", " : "") + std::to_string(result.flagged[i]);
        problems.push_back("the consistency check flags golden image(s) " + list + "] it passed at export");
    }
    result.passed = problems.empty();
    for (size_t i = 0; i < problems.size(); ++i) result.reason += (i ? "; " : "") + problems[i];
    if (problems.empty()) result.reason = "within tolerance";
    if (chosen != key) result.reason += "; tolerance of " + chosen + " (this backend was not measured at export)";
    return result;
}

}  // namespace recon::golden

namespace recon {

std::string Verification::line() const {
    std::string head = std::string(passed ? "PASS" : "FAIL") + "  " + backend + "/" + precision;
    if (!max_abs) return head + ": " + reason;
    double nan = std::numeric_limits<double>::quiet_NaN();
    bool tol = !tolerance_key.empty();
    return head + ": max |error| " + golden::g3(*max_abs) + " (tolerance " + golden::g3(tol ? tolerance_max_abs : nan) + "), PSNR " +
           (std::isinf(*psnr) ? std::string("inf") : golden::f2(*psnr)) + " dB (at least " + golden::f2(tol ? tolerance_min_psnr : nan) +
           ") on " + std::to_string(images) + " golden images; " + reason;
}

}  // namespace recon
