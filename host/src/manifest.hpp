// manifest.json, checked field by field as recon.runtime.artifact.manifest checks it (same rules, same
// messages), and the artifact's files verified as they are read (size, sha256, no links, no ONNX external
// data). runtime/artifact/manifest.py documents the format; this file follows it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "json_strict.hpp"

namespace recon::artifact {

using json::Json;

// Caps from recon.runtime.limits (the Python runtime's defaults).
constexpr long long kMaxImageSide = 8192;
constexpr long long kMaxImagePixels = 8192LL * 8192;
constexpr long long kMaxBatch = 256;
constexpr unsigned long long kMaxManifestBytes = 4ULL * 1024 * 1024;
constexpr int kMaxJsonDepth = 32;
constexpr long long kMaxArtifactFileBytes = 4LL * 1024 * 1024 * 1024;
constexpr size_t kMaxArtifactFiles = 64;
constexpr int kMaxStaticShapes = 8;
constexpr const char* kGoldenFolder = "golden";  // the one sub-folder files may be listed in (format v3)

struct FileEntry {
    std::string sha256;
    uint64_t size = 0;
    std::string kind;       // onnx, tensorrt, report, consistency, golden
    std::string precision;  // "" when null
};

struct IoSpec {
    std::string name;
    std::array<std::optional<int64_t>, 2> hw;  // H, W: nullopt for a symbolic (any-size) side
    std::array<Json, 4> dims;                    // the shape as written (graph I/O checks compare it)
    std::optional<std::pair<double, double>> value_range;
    bool clip = true;
};

struct Spatial {
    bool whole_image = true;
    int min = 0, opt = 0, max = 0, multiple_of = 1, tile = 0, overlap = 0;
    std::string blend = "gaussian";
    std::optional<int> receptive_field;
};

struct Bound {
    std::string check;  // upper, lower, both
    double low = 0, high = 0;
};

struct ConsistencyEntry {
    std::string file, image_input, measurement_input, output;
    std::vector<std::string> statistics;
    std::vector<std::pair<std::string, Bound>> bounds;  // in the manifest's order
};

struct Batch {
    int min = 1, opt = 0, max = 0;
    bool has_min = false, has_opt = false;
};

struct Manifest {
    int format_version = 3;
    std::string name, task, recon_version;
    IoSpec input, output;
    Batch batch;
    Json batch_json;  // as written (messages quote it)
    std::vector<std::pair<std::string, FileEntry>> files;  // in the manifest's order
    std::optional<Json> spatial_json;
    std::optional<ConsistencyEntry> consistency;
    std::optional<Json> golden_json;  // format v3's golden entry as written (checked where it is used)

    const FileEntry& file(const std::string& name) const;
    // The ONNX file of that precision, or "".
    std::string onnx_file(const std::string& precision) const;
};

class SpatialError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};
Spatial parse_spatial(const Json& data);

// `directory` as Python's pathlib prints it (trailing slashes dropped), joined with a file name.
std::string clean_directory(const std::string& directory);
std::string join(const std::string& directory, const std::string& name);

// Read directory/manifest.json; with `verify`, check every listed file's size and sha256 (ArtifactError).
Manifest load_manifest(const std::string& directory, bool verify);
// The bytes of one listed file, checked against its size and sha256 (and, ONNX, self-contained).
std::string read_verified(const std::string& directory, const Manifest& manifest, const std::string& name);
// Refuse an ONNX model whose tensors keep their data in other files.
void check_self_contained(const std::string& path, const std::string& model);

}  // namespace recon::artifact
