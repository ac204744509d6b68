#include "manifest.hpp"

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>

#include "files.hpp"
#include "onnx_scan.hpp"
#include "recon/recon.hpp"
#include "task_config.hpp"

namespace recon::artifact {
namespace {

using json::as_int;
using json::is_int;
using json::is_number;
using json::py_repr;

const char* kTampered = "the file is damaged or tampered with, re-export the artifact";
constexpr double kFloat32Max = 3.4028234663852886e38;

[[noreturn]] void fail(const std::string& message) { throw ArtifactError(message); }

std::string repr_list(const std::vector<std::string>& names) {
    Json list = Json::array();
    for (const auto& name : names) list.push_back(name);
    return py_repr(list);
}

const Json* get(const Json& object, const std::string& key) {
    auto found = object.find(key);
    return found == object.end() ? nullptr : &*found;
}

size_t code_points(const std::string& text) {  // Python's len() of a str
    return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
        return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    }));
}

IoSpec check_io_spec(const Json& spec, const std::string& side, const std::string& source) {
    const Json* shape = spec.is_object() ? get(spec, "shape") : nullptr;
    const Json* name = spec.is_object() ? get(spec, "name") : nullptr;
    const long long caps[4] = {kMaxBatch, 1, kMaxImageSide, kMaxImageSide};
    bool ok = name && name->is_string() && code_points(name->get<std::string>()) > 0 &&
              code_points(name->get<std::string>()) <= 256 && shape && shape->is_array() && shape->size() == 4 &&
              is_int((*shape)[1]) && as_int((*shape)[1]) == 1;
    if (ok) {
        for (size_t i = 0; i < 4; ++i) {
            const Json& d = (*shape)[i];
            bool fits = (is_int(d) && as_int(d) > 0 && as_int(d) <= caps[i]) ||
                        (d.is_string() && code_points(d.get<std::string>()) <= 64) || d.is_null();
            ok = ok && fits;
        }
    }
    if (!ok)
        fail(source + ": " + side + " needs a name and a shape [batch, 1, H, W] (H, W at most " +
             std::to_string(kMaxImageSide) + "), got " + py_repr(spec) + "; re-export the artifact");
    IoSpec io;
    io.name = name->get<std::string>();
    for (size_t i = 0; i < 4; ++i) io.dims[i] = (*shape)[i];
    for (size_t i = 0; i < 2; ++i)
        if (is_int((*shape)[i + 2])) io.hw[i] = as_int((*shape)[i + 2]);
    if (io.hw[0] && io.hw[1] && *io.hw[0] * *io.hw[1] > kMaxImagePixels)
        fail(source + ": " + side + " shape " + py_repr(*shape) + " holds more than " + std::to_string(kMaxImagePixels) +
             " pixels per image (recon.runtime.limits.MAX_IMAGE_PIXELS); re-export the artifact");
    const Json* range = get(spec, "value_range");
    if (range && !range->is_null()) {
        bool good = range->is_array() && range->size() == 2 && is_number((*range)[0]) && is_number((*range)[1]) &&
                    (*range)[0].get<double>() < (*range)[1].get<double>();
        if (!good)
            fail(source + ": " + side +
                 " value_range must be null or [low, high] with low < high, both within float32's range (±" +
                 "3.403e+38), got " + py_repr(*range) + "; re-export the artifact");
        io.value_range = std::make_pair((*range)[0].get<double>(), (*range)[1].get<double>());
    }
    const Json* clip = get(spec, "clip");
    if (clip && !clip->is_boolean())
        fail(source + ": " + side + " clip must be true or false, got " + py_repr(*clip) + "; re-export");
    io.clip = clip ? clip->get<bool>() : true;
    // then IOSpec.from_json's own checks (runtime/artifact/io_spec.py), in its order: layout, dtype
    const Json* layout = get(spec, "layout");
    if (layout && !layout->is_null() && !(layout->is_string() && code_points(layout->get<std::string>()) <= 16))
        fail(source + ": " + side + " layout must be a short string, got " + py_repr(*layout) + "; re-export");
    const Json* dtype = get(spec, "dtype");
    if (dtype && !(dtype->is_string() && code_points(dtype->get<std::string>()) <= 16))
        fail(source + ": " + side + " dtype must be a short string, got " + py_repr(*dtype) + "; re-export");
    return io;
}

Batch check_batch(const Json& batch, const std::string& source) {
    bool ok = batch.contains("max");
    for (const auto& [key, value] : batch.items()) {
        ok = ok && (key == "min" || key == "opt" || key == "max");
        ok = ok && is_int(value) && as_int(value) >= 1 && as_int(value) <= kMaxBatch;
    }
    Batch profile;
    if (ok) {
        profile.max = static_cast<int>(as_int(batch["max"]));
        profile.has_min = batch.contains("min");
        profile.has_opt = batch.contains("opt");
        profile.min = profile.has_min ? static_cast<int>(as_int(batch["min"])) : 1;
        profile.opt = profile.has_opt ? static_cast<int>(as_int(batch["opt"])) : profile.max;
        ok = profile.min <= profile.opt && profile.opt <= profile.max;
    }
    if (!ok)
        fail(source + ": batch profile " + py_repr(batch) + " must hold integers 1 <= min <= opt <= max <= " +
             std::to_string(kMaxBatch) + " (max required; recon.runtime.limits.MAX_BATCH); re-export the artifact");
    return profile;
}

bool plain_name(const std::string& name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
           name.find('\0') == std::string::npos;
}

// manifest.py's is_listed_name: a plain name, or one plain name inside the golden folder (nothing deeper).
bool listed_name(const std::string& name) {
    size_t slash = name.find('/');
    if (slash == std::string::npos) return plain_name(name);
    return name.substr(0, slash) == kGoldenFolder && plain_name(name.substr(slash + 1));
}

FileEntry check_file_entry(const std::string& name, const Json& entry, const std::string& source) {
    if (!listed_name(name))
        fail(source + ": file name " + py_repr(Json(name)) + " must be a plain name inside the artifact (or " +
             kGoldenFolder + "/NAME)");
    if (!entry.is_object())
        fail(source + ": files[" + py_repr(Json(name)) + "] must be an object, got " + py_repr(entry) + "; re-export");
    static const std::regex sha256_pattern("[0-9a-f]{64}");
    auto value = [&](const char* key) { const Json* v = get(entry, key); return v ? *v : Json(nullptr); };
    Json sha = value("sha256"), size = value("size"), kind = value("kind"), precision = value("precision"),
         tensorrt = value("tensorrt");
    static const std::set<std::string> kinds = {"onnx", "tensorrt", "report", "consistency", "golden"};
    static const std::set<std::string> precisions = {"fp32", "fp16", "int8"};
    std::vector<std::pair<std::string, bool>> problems = {
        {"sha256", !(sha.is_string() && std::regex_match(sha.get<std::string>(), sha256_pattern))},
        {"size", !(is_int(size) && as_int(size) >= 0 && as_int(size) <= kMaxArtifactFileBytes)},
        {"kind", !(kind.is_string() && kinds.count(kind.get<std::string>()))},
        {"precision", !(precision.is_null() || (precision.is_string() && precisions.count(precision.get<std::string>())))},
        {"tensorrt", !(tensorrt.is_null() || tensorrt.is_object())},
    };
    for (const auto& [key, wrong] : problems) {
        if (!wrong) continue;
        std::string expected = key == "sha256"      ? "64 lowercase hex digits"
                               : key == "size"      ? "an integer 0.." + std::to_string(kMaxArtifactFileBytes)
                               : key == "kind"      ? "one of ('onnx', 'tensorrt', 'report', 'consistency', 'golden')"
                               : key == "precision" ? "null or one of ('fp32', 'fp16', 'int8')"
                                                    : "null or an object";
        fail(source + ": files[" + py_repr(Json(name)) + "]." + key + " must be " + expected + ", got " +
             py_repr(value(key.c_str())) + "; the artifact is damaged, re-export it");
    }
    return {sha.get<std::string>(), static_cast<uint64_t>(as_int(size)), kind.get<std::string>(),
            precision.is_null() ? "" : precision.get<std::string>()};
}

bool finite_number(const Json* value) {
    return value && value->is_number() && std::isfinite(value->get<double>());
}

ConsistencyEntry check_consistency_entry(const Json& entry, const std::vector<std::pair<std::string, FileEntry>>& files,
                                         const std::string& source) {
    auto bad = [&](const std::string& what) { fail(source + ": consistency entry " + what + "; re-export the artifact"); };
    if (!entry.is_object()) bad("must be a JSON object, got " + py_repr(entry));
    const Json* file = get(entry, "file");
    auto listed = std::find_if(files.begin(), files.end(), [&](const auto& f) {
        return file && file->is_string() && f.first == file->get<std::string>();
    });
    if (listed == files.end())
        bad("names file " + py_repr(file ? *file : Json(nullptr)) + ", which the manifest's files do not list");
    if (listed->second.kind != "consistency")
        bad("file " + py_repr(*file) + " is listed with kind " + py_repr(Json(listed->second.kind)) + ", not 'consistency'");
    const Json* stats = get(entry, "statistics");
    bool stats_ok = stats && stats->is_array() && !stats->empty() &&
                    std::all_of(stats->begin(), stats->end(), [](const Json& s) { return s.is_string(); });
    if (!stats_ok) bad("needs a non-empty list of statistic names, got " + py_repr(stats ? *stats : Json(nullptr)));
    ConsistencyEntry out;
    for (const Json& s : *stats) out.statistics.push_back(s.get<std::string>());
    auto has_stat = [&](const std::string& name) {
        return std::find(out.statistics.begin(), out.statistics.end(), name) != out.statistics.end();
    };
    if (!has_stat("residual")) bad("lists no 'residual' statistic");
    const Json* inputs = get(entry, "inputs");
    if (!(inputs && inputs->is_array() && inputs->size() == 2))
        bad("needs two input names (image, measurement), got " + py_repr(inputs ? *inputs : Json(nullptr)));
    const Json* output = get(entry, "output");
    if (!(*inputs)[0].is_string() || !(*inputs)[1].is_string() || !(output && output->is_string()))
        bad("input and output names must be strings");
    const Json* bounds = get(entry, "bounds");
    if (!(bounds && bounds->is_object()))
        bad("needs 'bounds' (statistic -> interval), got " + py_repr(bounds ? *bounds : Json(nullptr)));
    for (const auto& [stat, bound] : bounds->items()) {
        std::string quoted = py_repr(Json(stat));
        if (!has_stat(stat)) bad("bounds statistic " + quoted + " is not among its statistics " + repr_list(out.statistics));
        const Json* check = bound.is_object() ? get(bound, "check") : nullptr;
        std::string side = check && check->is_string() ? check->get<std::string>() : "";
        if (side != "upper" && side != "lower" && side != "both")
            bad("bound of " + quoted + " needs 'check' in ('upper', 'lower', 'both'), got " + py_repr(bound));
        Bound parsed{side, 0, 0};
        for (auto [which, key] : {std::pair{"lower", "low"}, std::pair{"upper", "high"}}) {
            const Json* value = get(bound, key);
            bool needed = side == which || side == "both";
            if (needed && !finite_number(value))
                bad("bound of " + quoted + " checks the " + which + " side but its '" + key + "' is " +
                    py_repr(value ? *value : Json(nullptr)));
            if (needed) (std::string(key) == "low" ? parsed.low : parsed.high) = value->get<double>();
        }
        if (side == "both" && !(parsed.low <= parsed.high))
            bad("bound of " + quoted + " has low " + py_repr(bound["low"]) + " > high " + py_repr(bound["high"]));
        out.bounds.emplace_back(stat, parsed);
    }
    if (!bounds->contains("residual")) bad("has no bound for 'residual'");
    out.file = file->get<std::string>();
    out.image_input = (*inputs)[0].get<std::string>();
    out.measurement_input = (*inputs)[1].get<std::string>();
    out.output = output->get<std::string>();
    return out;
}

Manifest from_json(const Json& data, const std::string& source) {
    if (!data.is_object()) fail(source + ": expected a JSON object, got " + json::py_type(data));
    const Json* version = get(data, "format_version");
    if (!(version && is_int(*version) && as_int(*version) >= 1 && as_int(*version) <= 3)) {
        const Json* written = get(data, "recon_version");
        std::string by = !written ? "unknown" : written->is_string() ? written->get<std::string>() : py_repr(*written);
        fail(source + ": artifact format version " + py_repr(version ? *version : Json(nullptr)) +
             " is not known to this recon (it reads versions 1, 2, 3); re-export the model with this recon version or "
             "install the recon version that wrote it (" + by + ")");
    }
    Manifest m;
    m.format_version = static_cast<int>(as_int(*version));
    std::string task_key = m.format_version >= 2 ? "task_config" : "physics";
    std::vector<std::string> missing;
    for (const std::string& key : {std::string("name"), std::string("task"), std::string("model"), std::string("input"),
                                   std::string("output"), task_key, std::string("batch"), std::string("files")})
        if (!data.contains(key)) missing.push_back(key);
    if (!missing.empty()) fail(source + ": missing keys " + repr_list(missing) + "; the artifact is damaged, re-export it");
    const Json& task = data["task"];
    if (!(task.is_string() && (task.get<std::string>() == "deblur" || task.get<std::string>() == "ct")))
        fail(source + ": task must be one of ('deblur', 'ct'), got " + py_repr(task));
    for (const std::string& key : {std::string("name"), std::string("model"), task_key, std::string("batch"), std::string("files")}) {
        bool object = key != "name";
        if (object ? !data[key].is_object() : !data[key].is_string())
            fail(source + ": " + py_repr(Json(key)) + " must be a JSON " + (object ? "object" : "string") + ", got " +
                 py_repr(data[key]) + "; the artifact is damaged, re-export it");
    }
    const Json* parity = get(data, "parity");
    if (parity && !parity->is_null() && !parity->is_object())
        fail(source + ": 'parity' must be a JSON object; re-export the artifact");
    m.input = check_io_spec(data["input"], "input", source);
    m.output = check_io_spec(data["output"], "output", source);
    m.batch = check_batch(data["batch"], source);
    m.batch_json = data["batch"];
    m.task = task.get<std::string>();
    const Json* stored = m.format_version >= 2 ? &data["task_config"] : get(data["physics"], "task_config");
    std::string config_task;
    try {
        config_task = task_config::check(stored ? *stored : Json(nullptr));
    } catch (const task_config::Invalid& error) {
        fail(source + ": task_config: " + error.what() + "; the artifact is damaged, re-export it");
    }
    if (config_task != m.task)
        fail(source + ": task_config is for task " + py_repr(Json(config_task)) + " but the artifact's task is " +
             py_repr(task) + "; the artifact is damaged, re-export it");
    const Json* spatial = get(data, "spatial");
    if (spatial && !spatial->is_null()) {
        try {
            parse_spatial(*spatial);
        } catch (const SpatialError& error) {
            fail(source + ": " + error.what() + "; re-export the artifact");
        }
        m.spatial_json = *spatial;
    }
    m.name = data["name"].get<std::string>();
    static const std::regex name_pattern("[A-Za-z0-9][A-Za-z0-9._+-]{0,127}");
    if (!std::regex_match(m.name, name_pattern))
        fail(source + ": name " + py_repr(data["name"]) +
             " must be 1-128 letters, digits, '.', '_', '+' or '-' (it names cache folders); re-export the artifact");
    if (data["files"].size() > kMaxArtifactFiles)
        fail(source + ": more than " + std::to_string(kMaxArtifactFiles) + " files listed; re-export");
    for (const auto& [name, entry] : data["files"].items()) m.files.emplace_back(name, check_file_entry(name, entry, source));
    const Json* consistency = get(data, "consistency");
    if (consistency && !consistency->is_null()) m.consistency = check_consistency_entry(*consistency, m.files, source);
    for (const char* key : {"golden", "lineage"}) {  // golden: checked in full where it is used (verify)
        const Json* value = get(data, key);
        if (value && !value->is_null() && !value->is_object())
            fail(source + ": " + py_repr(Json(key)) + " must be a JSON object; re-export the artifact");
    }
    if (const Json* golden = get(data, "golden"); golden && golden->is_object()) m.golden_json = *golden;
    const Json* written = get(data, "recon_version");
    m.recon_version = written ? (written->is_string() ? written->get<std::string>() : py_repr(*written)).substr(0, 64) : "unknown";
    return m;
}

// manifest.py's inside(): directory/name, refusing a golden folder that is a link (it could lead out of the
// artifact; O_NOFOLLOW guards only the last component of the path).
std::string inside(const std::string& directory, const std::string& name) {
    if (name.find('/') != std::string::npos && files::is_link(join(directory, kGoldenFolder)))
        fail(join(directory, kGoldenFolder) + ": is a symbolic link; " + kTampered);
    return join(directory, name);
}

void verify_files(const std::string& directory, const Manifest& manifest) {
    for (const auto& [name, entry] : manifest.files) {
        std::string path = inside(directory, name);
        if (!files::exists_or_link(path)) fail(path + ": listed in the manifest but missing; re-export the artifact");
        if (entry.kind == "onnx") {  // the bytes are needed anyway, for the external-data scan
            read_verified(directory, manifest, name);
            continue;
        }
        std::string digest;
        try {
            digest = files::sha256_bounded(path, entry.size);
        } catch (const files::FileRefused& error) {
            fail(std::string(error.what()) + "; " + kTampered);
        }
        if (digest != entry.sha256)
            fail(path + ": sha256 does not match the manifest; the file was changed or damaged, re-export the artifact");
    }
}

}  // namespace

const FileEntry& Manifest::file(const std::string& wanted) const {
    for (const auto& [name, entry] : files)
        if (name == wanted) return entry;
    throw ArtifactError("manifest lists no file " + wanted);
}

std::string Manifest::onnx_file(const std::string& precision) const {
    for (const auto& [name, entry] : files)
        if (entry.kind == "onnx" && entry.precision == precision) return name;
    return "";
}

Spatial parse_spatial(const Json& data) {
    auto error = [](const std::string& what) { throw SpatialError(what); };
    if (!data.is_object()) error("spatial must be a JSON object, got " + py_repr(data));
    static const std::vector<std::string> known = {"whole_image", "min", "opt", "max", "multiple_of",
                                                   "tile", "overlap", "blend", "receptive_field"};
    std::vector<std::string> unknown, missing;
    for (const auto& [key, value] : data.items())
        if (std::find(known.begin(), known.end(), key) == known.end()) unknown.push_back(key);
    std::sort(unknown.begin(), unknown.end());
    if (!unknown.empty()) error("spatial has unknown keys " + repr_list(unknown));
    for (size_t i = 0; i < 7; ++i)
        if (!data.contains(known[i])) missing.push_back(known[i]);
    if (!missing.empty()) error("spatial is missing " + repr_list(missing));
    if (!data["whole_image"].is_boolean())
        error("spatial whole_image must be true or false, got " + py_repr(data["whole_image"]));
    Spatial s;
    s.whole_image = data["whole_image"].get<bool>();
    int* slots[] = {&s.min, &s.opt, &s.max, &s.multiple_of, &s.tile};
    for (size_t i = 0; i < 5; ++i) {
        const Json& value = data[known[i + 1]];
        if (!(is_int(value) && as_int(value) >= 1 && as_int(value) <= kMaxImageSide))
            error("spatial " + known[i + 1] + " must be an integer in 1.." + std::to_string(kMaxImageSide) + ", got " + py_repr(value));
        *slots[i] = static_cast<int>(as_int(value));
    }
    if (!(s.min <= s.opt && s.opt <= s.max))
        error("spatial needs min <= opt <= max, got " + std::to_string(s.min) + ", " + std::to_string(s.opt) + ", " + std::to_string(s.max));
    if (s.min % s.multiple_of || s.max % s.multiple_of)
        error("spatial min and max must be multiples of multiple_of (" + std::to_string(s.multiple_of) + ")");
    if (s.whole_image && !(s.min <= s.tile && s.tile <= s.max))
        error("spatial tile " + std::to_string(s.tile) + " must lie within min..max (" + std::to_string(s.min) + ".." + std::to_string(s.max) + ")");
    if (s.tile % s.multiple_of)
        error("spatial tile " + std::to_string(s.tile) + " must be a multiple of " + std::to_string(s.multiple_of));
    const Json& overlap = data["overlap"];
    if (!(is_int(overlap) && as_int(overlap) >= 0 && as_int(overlap) < s.tile))
        error("spatial overlap must be an integer in 0..tile-1, got " + py_repr(overlap));
    s.overlap = static_cast<int>(as_int(overlap));
    const Json* blend = get(data, "blend");
    if (blend && !(blend->is_string() && (blend->get<std::string>() == "gaussian" || blend->get<std::string>() == "cosine")))
        error("spatial blend must be one of ['gaussian', 'cosine'], got " + py_repr(*blend));
    if (blend) s.blend = blend->get<std::string>();
    const Json* field = get(data, "receptive_field");
    if (field && !field->is_null()) {
        if (!(is_int(*field) && as_int(*field) >= 1))
            error("spatial receptive_field must be a positive integer or null, got " + py_repr(*field));
        s.receptive_field = static_cast<int>(std::min<long long>(as_int(*field), 1 << 30));
    }
    return s;
}

std::string clean_directory(const std::string& directory) {
    std::string out = directory;
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out.empty() ? "." : out;
}

std::string join(const std::string& directory, const std::string& name) {
    std::string dir = clean_directory(directory);
    return dir == "/" ? "/" + name : dir + "/" + name;
}

Manifest load_manifest(const std::string& directory_in, bool verify) {
    std::string directory = clean_directory(directory_in);
    std::string path = join(directory, "manifest.json");
    if (!files::is_directory(directory))
        fail(directory + ": not an artifact directory (expected a folder made by recon-export)");
    if (!files::exists_or_link(path))
        fail(directory + ": no manifest.json; this is not a recon artifact, run recon-export");
    std::string raw;
    try {
        raw = files::read_at_most(path, kMaxManifestBytes);
    } catch (const files::FileRefused& error) {
        fail(std::string(error.what()) + "; the artifact is damaged or tampered with, re-export it");
    }
    Json data;
    try {
        data = json::parse_strict(raw, kMaxJsonDepth);
    } catch (const json::JsonRefused& error) {
        if (error.too_deep)
            fail(path + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                 " levels; the artifact is damaged, re-export it");
        fail(path + ": not valid JSON (" + error.what() + "); the artifact is damaged, re-export it");
    }
    Manifest manifest = from_json(data, path);
    if (verify) verify_files(directory, manifest);
    return manifest;
}

std::string read_verified(const std::string& directory, const Manifest& manifest, const std::string& name) {
    std::string path = inside(directory, name);
    const FileEntry& entry = manifest.file(name);
    std::string data;
    try {
        data = files::read_bounded(path, entry.size);
    } catch (const files::FileRefused& error) {
        fail(std::string(error.what()) + "; " + kTampered);
    }
    if (files::sha256_hex(data) != entry.sha256)
        fail(path + ": sha256 does not match the manifest; refusing to load it, re-export");
    if (entry.kind == "onnx") check_self_contained(path, data);
    return data;
}

void check_self_contained(const std::string& path, const std::string& model) {
    std::vector<std::string> external;
    try {
        external = onnx::external_tensors(model);
    } catch (const onnx::MalformedModel& error) {
        fail(path + ": not a readable ONNX model (" + error.what() + "); re-export");
    }
    if (!external.empty()) {
        external.resize(std::min<size_t>(external.size(), 3));
        fail(path + ": tensors " + repr_list(external) +
             " keep their data in other files (ONNX external data), which the manifest does not hash; refusing it, "
             "re-export as one self-contained file");
    }
}

}  // namespace recon::artifact
