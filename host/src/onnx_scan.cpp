#include "onnx_scan.hpp"

#include <cstdint>
#include <map>
#include <tuple>

namespace recon::onnx {
namespace {

// Field numbers from onnx/onnx.proto (onnx 1.23), the same table as runtime/artifact/onnx_proto.py:
// message kind -> {field number: message kind of that length-delimited field}.
enum Kind { kModel, kTraining, kFunction, kGraph, kNode, kAttribute, kSparse, kTensor };
const std::map<int, std::map<uint64_t, Kind>>& schema() {
    static const std::map<int, std::map<uint64_t, Kind>> table = {
        {kModel, {{7, kGraph}, {20, kTraining}, {25, kFunction}}},
        {kTraining, {{1, kGraph}, {2, kGraph}}},
        {kFunction, {{7, kNode}, {11, kAttribute}}},
        {kGraph, {{1, kNode}, {5, kTensor}, {15, kSparse}}},
        {kNode, {{5, kAttribute}}},
        {kAttribute, {{5, kTensor}, {6, kGraph}, {10, kTensor}, {11, kGraph}, {22, kSparse}, {23, kSparse}}},
        {kSparse, {{1, kTensor}, {2, kTensor}}},
    };
    return table;
}
constexpr int kMaxNesting = 64;
constexpr uint64_t kExternal = 1;  // TensorProto.DataLocation.EXTERNAL

uint64_t varint(const std::string& data, size_t& pos, size_t end) {
    uint64_t value = 0;
    int shift = 0;
    while (true) {
        if (pos >= end || shift > 63) throw MalformedModel("truncated or over-long varint");
        auto byte = static_cast<uint8_t>(data[pos++]);
        value |= static_cast<uint64_t>(byte & 0x7F) << shift;
        if (!(byte & 0x80)) return value;
        shift += 7;
    }
}

struct Field {
    uint64_t number;
    int wire;
    uint64_t a;  // the value (varint) or the payload start (length-delimited)
    size_t b;    // the payload end
};

// Every field of data[start:end], in order.
std::vector<Field> fields(const std::string& data, size_t start, size_t end) {
    std::vector<Field> found;
    size_t pos = start;
    while (pos < end) {
        uint64_t key = varint(data, pos, end);
        uint64_t number = key >> 3;
        int wire = static_cast<int>(key & 7);
        if (wire == 0) {
            uint64_t value = varint(data, pos, end);
            found.push_back({number, wire, value, pos});
        } else if (wire == 1) {
            pos += 8;
            found.push_back({number, wire, 0, pos});
        } else if (wire == 2) {
            uint64_t length = varint(data, pos, end);
            if (length > end - pos) throw MalformedModel("a field runs past the end of its message");
            found.push_back({number, wire, pos, pos + static_cast<size_t>(length)});
            pos += static_cast<size_t>(length);
        } else if (wire == 5) {
            pos += 4;
            found.push_back({number, wire, 0, pos});
        } else {  // groups (3, 4) are not used by ONNX
            throw MalformedModel("unexpected protobuf wire type " + std::to_string(wire));
        }
        if (pos > end) throw MalformedModel("a field runs past the end of its message");
    }
    return found;
}

}  // namespace

std::vector<std::string> external_tensors(const std::string& model) {
    std::vector<std::string> found;
    std::vector<std::tuple<Kind, size_t, size_t, int>> stack = {{kModel, 0, model.size(), 0}};
    while (!stack.empty()) {
        auto [kind, start, end, depth] = stack.back();
        stack.pop_back();
        if (depth > kMaxNesting)
            throw MalformedModel("messages nested deeper than " + std::to_string(kMaxNesting) + " levels");
        if (kind == kTensor) {
            std::string name;
            bool external = false;
            for (const Field& f : fields(model, start, end)) {
                if (f.number == 8 && f.wire == 2) name = model.substr(static_cast<size_t>(f.a), f.b - static_cast<size_t>(f.a));
                else if (f.number == 13 && f.wire == 2) external = true;
                else if (f.number == 14 && f.wire == 0) external |= f.a == kExternal;
            }
            if (external) found.push_back(name.empty() ? "<unnamed>" : name);
            continue;
        }
        const auto& children = schema().at(kind);
        for (const Field& f : fields(model, start, end)) {
            auto child = children.find(f.number);
            if (f.wire == 2 && child != children.end())
                stack.emplace_back(child->second, static_cast<size_t>(f.a), f.b, depth + 1);
        }
    }
    return found;
}

}  // namespace recon::onnx
