// Tensors an ONNX model keeps outside itself (external data), found without the onnx library by walking
// the protobuf wire format, as recon.runtime.artifact.onnx_proto does (same fields, same nesting cap).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace recon::onnx {

class MalformedModel : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Names of the tensors whose data lives outside `model` (ModelProto bytes); MalformedModel when the bytes
// cannot be walked or nest deeper than 64 messages.
std::vector<std::string> external_tensors(const std::string& model);

}  // namespace recon::onnx
