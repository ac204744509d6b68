// OpenVINO on the CPU, set up as recon.runtime.backends.openvino does it: the verified bytes are the bytes
// compiled, inference precision pinned (f32 for fp32/int8/fp16 files: the CPU plugin's default is bf16 on
// bf16 CPUs), one stream, a static compilation per input shape met (up to 8), a pool of infer requests so
// concurrent callers never share one.
#pragma once

#include <openvino/openvino.hpp>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace recon::engine {

std::string first_line(const std::exception& error);
ov::AnyMap compile_config(int threads);

// A CompiledModel and its idle infer requests.
struct Entry {
    ov::CompiledModel compiled;
    std::mutex lock;
    std::vector<ov::InferRequest> idle;
};

// An idle request of the entry (a new one if none is idle), given back on destruction.
class BorrowedRequest {
  public:
    explicit BorrowedRequest(Entry& entry);
    ~BorrowedRequest();
    ov::InferRequest& operator*() { return request_; }
    ov::InferRequest* operator->() { return &request_; }

  private:
    Entry& entry_;
    ov::InferRequest request_;
};

// One graph's CompiledModels: the dynamic one and a static one per key met (compiled on first use for the
// shapes given), up to 8, never evicted: a key always runs on the same compilation, so the same bits.
class CompiledShapes {
  public:
    CompiledShapes(ov::Core core, std::shared_ptr<ov::Model> model, ov::AnyMap config, ov::CompiledModel dynamic);
    Entry& dynamic() { return *dynamic_; }
    Entry& get(const std::vector<int64_t>& key, const std::map<std::string, ov::PartialShape>& shapes);

  private:
    ov::Core core_;
    std::shared_ptr<ov::Model> model_;
    ov::AnyMap config_;
    std::unique_ptr<Entry> dynamic_;
    std::map<std::vector<int64_t>, std::unique_ptr<Entry>> statics_;
    std::shared_mutex lock_;
};

// The network: one ONNX file of the artifact, checked against the manifest's I/O at load.
class Network {
  public:
    Network(const std::string& directory, const artifact::Manifest& manifest, const std::string& precision, int threads);
    // (n, 1, h, w) float32 in, the output tensor's values out (shape in `out_shape`).
    std::vector<float> infer(const float* batch, int64_t n, int64_t h, int64_t w, std::vector<int64_t>& out_shape);
    const std::string& file() const { return file_; }
    const std::string& precision() const { return precision_; }

  private:
    std::string file_, path_, precision_, input_name_;
    std::vector<int> static_batches_;
    size_t output_index_ = 0;
    std::unique_ptr<CompiledShapes> shapes_;
};

}  // namespace recon::engine
