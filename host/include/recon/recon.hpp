// recon host library: runs a recon artifact directory (manifest.json + ONNX files) from C++ without Python.
//
// The artifact directory is the contract (docs/embedding.md): this library reads it exactly as the Python
// runtime (recon.runtime) does — the same manifest checks, sha256 of every file it loads, the same refusals
// of damaged or hostile artifacts, the same input checks, integer scaling, whole / padded / tiled plan with
// the same blending, clipping and batching, and the same consistency scores and flags. OpenVINO on the CPU.
//
//   recon::Reconstructor rec("artifacts/resunet-deblur");
//   recon::Result out = rec.run(pixels.data(), {8, 1, 512, 512});   // out.images, out.scores
//
// Thread-safe: one Reconstructor may serve any number of threads calling run() at once.
// Errors are exceptions derived from recon::Error (std::runtime_error); what() is one line.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace recon {

// Every error this library throws; what() says why and what to do, on one line.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};
// The artifact cannot be used as it is (damaged, tampered with, unknown version, graph disagrees with the
// manifest): Python's recon.runtime.ArtifactError.
class ArtifactError : public Error {
  public:
    using Error::Error;
};
// The engine cannot run here (OpenVINO missing a device, a failed compilation): Python's BackendError.
class BackendError : public Error {
  public:
    using Error::Error;
};
// The input of run() does not fit the artifact (shape, NaN/Inf, values far outside its range), or the
// network overflowed on it: Python's ValueError from Reconstructor.run.
class InputError : public Error {
  public:
    using Error::Error;
};
// An option the artifact cannot take (precision, threads, tile, overlap, blend): Python's ValueError from
// Reconstructor.from_artifact.
class OptionError : public Error {
  public:
    using Error::Error;
};
// run() on a closed Reconstructor.
class ClosedError : public Error {
  public:
    using Error::Error;
};

// Element types run() takes. Floats are taken as they are; integers are scaled to [0, 1] by their type's
// maximum (images only: a CT artifact refuses integer sinograms, which have no known scale).
enum class DType { f32, f64, u8, i8, u16, i16, u32, i32 };

struct Options {
    int threads = 0;                    // CPU threads for OpenVINO; 0: one per core
    std::string precision = "auto";     // "auto" (fp32), "fp32", "fp16", "int8": which ONNX file runs
    std::optional<bool> clip;           // clip outputs to the manifest's output range (default: manifest)
    bool consistency = true;            // score every output with the artifact's consistency graph
    std::optional<int> tile;            // tile side in px: a cap above which images are tiled
    std::optional<int> overlap;         // tile overlap in px (default: the manifest's)
    std::optional<std::string> blend;   // "gaussian" or "cosine" (default: the manifest's)
};

// One image's data-consistency check: r = ||A(x) - y|| / ||y|| and the other statistics, judged against
// the calibrated bounds of the manifest. flagged: some statistic left its interval (reasons say which).
struct Score {
    double residual = 0.0;
    std::vector<std::pair<std::string, double>> statistics;  // in the manifest's order
    bool flagged = false;
    std::vector<std::string> reasons;
};

struct Result {
    std::vector<float> images;    // row-major, the shape below
    std::vector<int64_t> shape;   // the caller's rank: (H, W), (B, H, W) or (B, 1, H, W)
    std::vector<Score> scores;    // one per image; empty when the check is off or the artifact has none
};

// One backend/precision on the artifact's golden set (format 3), as `recon verify` reports it
// (runtime/verify.py's GoldenResult): passed or not, why, and the numbers against the tolerance.
struct Verification {
    std::string backend, precision;
    bool passed = false;
    std::string reason;
    int64_t images = 0;
    std::optional<double> max_abs, psnr;  // unset when the outputs could not be compared; psnr inf: identical
    int64_t worst_image = 0;
    std::string tolerance_key;            // "" when the artifact holds no tolerance for this precision
    double tolerance_max_abs = 0, tolerance_min_psnr = 0;
    std::vector<int64_t> flagged;         // golden images the consistency check flags here, not at export
    std::string line() const;             // "PASS  openvino/fp32: max |error| ..." as `recon verify` prints
};

class Reconstructor {
  public:
    // Reads and verifies the artifact (manifest, every listed file's size and sha256) and compiles its
    // graphs. Throws ArtifactError (the artifact) or BackendError (the engine).
    explicit Reconstructor(const std::string& artifact_dir, const Options& options = {});
    ~Reconstructor();
    Reconstructor(const Reconstructor&) = delete;
    Reconstructor& operator=(const Reconstructor&) = delete;

    // Reconstruct a batch: `shape` is (H, W), (B, H, W) or (B, 1, H, W), row-major `data` of that many
    // elements. Returns images of the same rank, float32, clipped to the manifest's output range when
    // clipping is on, and one Score per image. Throws InputError for input the artifact refuses.
    Result run(const float* data, const std::vector<int64_t>& shape) const;
    Result run(const void* data, DType dtype, const std::vector<int64_t>& shape) const;

    // How an H x W input runs: "whole", "padded" (reflect-padded up to what the graph takes, cropped
    // back) or "tiled" (overlapping tiles blended back).
    std::string size_plan(int64_t height, int64_t width) const;
    // (batch, 1, H, W) for a batch of this artifact's nominal input: its fixed size, or for images of
    // any size the manifest's opt side.
    std::array<int64_t, 4> input_shape(int64_t batch) const;
    // "deblur" or "ct"; the artifact's name; the ONNX file and precision that run.
    std::string task() const;
    std::string name() const;
    std::string model_file() const;
    std::string precision() const;
    bool scores_outputs() const;  // false: no consistency scores (switched off, or none in the artifact)

    // Runs the artifact's golden inputs on this engine and holds the outputs to the references with the
    // manifest's tolerance for openvino/<precision>, as `recon verify` does. A format 1/2 artifact carries
    // no golden set: not passed, and the reason says so. Throws ArtifactError for a damaged golden set.
    Verification verify() const;

    // Waits for runs in flight, then frees the engine; later runs throw ClosedError. Idempotent.
    void close();

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

// The manifest and file checks alone (no engine): throws ArtifactError as Reconstructor would.
void verify_artifact(const std::string& artifact_dir);

std::string version();

}  // namespace recon
