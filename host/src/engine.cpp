#include "engine.hpp"

#include <algorithm>
#include <set>

#include "recon/recon.hpp"

namespace recon::engine {
namespace {

using json::Json;
using json::py_repr;

// runtime precision -> the artifact file's precision (the hint is f32 for all of them)
const std::map<std::string, std::string> kPrecisions = {{"fp32", "fp32"}, {"int8", "int8"}, {"fp16", "fp16"}};

struct Port {
    std::string name, type;
    Json shape;  // ints for static dims, "?" for dynamic ones (as the Python backend lists them)
};

Port port_of(const ov::Output<const ov::Node>& port) {
    Port p;
    p.name = port.get_any_name();
    std::string element = port.get_element_type().get_type_name();
    p.type = element == "f32" ? "tensor(float)" : element;
    p.shape = Json::array();
    const ov::PartialShape& shape = port.get_partial_shape();
    if (shape.rank().is_static())
        for (const auto& d : shape) p.shape.push_back(d.is_static() ? Json(d.get_length()) : Json("?"));
    return p;
}

// The batch profile as Python's BatchProfile prints it (runtime/artifact/io_spec.py): "min:opt:max", with
// min defaulting to 1 and opt to max where the manifest does not state them.
std::string batch_text(const artifact::Batch& batch) {
    int min = batch.has_min ? batch.min : 1;
    int opt = batch.has_opt ? batch.opt : batch.max;
    return std::to_string(min) + ":" + std::to_string(opt) + ":" + std::to_string(batch.max);
}

std::string names_list(const std::vector<Port>& ports) {
    Json names = Json::array();
    for (const auto& p : ports) names.push_back(p.name);
    return py_repr(names);
}

// runtime/backends/onnxruntime.py check_graph_io: types and static dims must agree with the manifest
void check_graph_io(const std::string& path, const artifact::Manifest& m, const Port& input, const Port& output) {
    for (auto [side, node, spec] : {std::tuple{"input", &input, &m.input}, std::tuple{"output", &output, &m.output}}) {
        if (node->type != "tensor(float)")
            throw ArtifactError(path + ": graph " + side + " " + py_repr(Json(node->name)) + " is " + node->type +
                                ", the runtime passes float32 (tensor(float)); re-export with FP32 inputs and outputs");
        const Json& graph = node->shape;
        bool bad = graph.size() != 4;
        for (size_t axis = 0; axis < std::min<size_t>(graph.size(), 4); ++axis) {
            bool static_have = graph[axis].is_number_integer(), static_want = json::is_int(spec->dims[axis]);
            long long have = static_have ? graph[axis].get<long long>() : 0;
            if (axis == 0) bad |= static_have && !(m.batch.min == have && have == m.batch.max);
            else if (static_have && static_want) bad |= have != json::as_int(spec->dims[axis]);
            else if (std::string(side) == "input") bad |= static_have;
        }
        if (bad) {
            Json wanted = Json::array();
            for (const auto& d : spec->dims) wanted.push_back(d);
            throw ArtifactError(path + ": graph " + side + " " + py_repr(Json(node->name)) + " has shape " + py_repr(graph) +
                                ", the manifest says " + py_repr(wanted) + " (batch " + batch_text(m.batch) +
                                "); the manifest does not describe this graph, re-export");
        }
    }
}

std::string tuple_text(const std::vector<int64_t>& shape) {
    std::string text = "(";
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + ")";
}

}  // namespace

std::string first_line(const std::exception& error) {
    std::string text = error.what();
    size_t start = text.find_first_not_of(" \t\r\n");
    if (start == std::string::npos) return "error";
    text = text.substr(start);
    return text.substr(0, text.find('\n'));
}

ov::AnyMap compile_config(int threads) {
    ov::AnyMap config = {
        ov::hint::inference_precision(ov::element::f32),  // the CPU plugin's default is bf16 on bf16 CPUs
        ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
        // one stream: every request runs on the same threads, so outputs do not depend on the stream
        ov::num_streams(1),
    };
    if (threads > 0) config.emplace(ov::inference_num_threads(threads));
    return config;
}

BorrowedRequest::BorrowedRequest(Entry& entry) : entry_(entry) {
    {
        std::lock_guard<std::mutex> hold(entry.lock);
        if (!entry.idle.empty()) {
            request_ = std::move(entry.idle.back());
            entry.idle.pop_back();
            return;
        }
    }
    request_ = entry.compiled.create_infer_request();
}

BorrowedRequest::~BorrowedRequest() {
    std::lock_guard<std::mutex> hold(entry_.lock);
    entry_.idle.push_back(std::move(request_));
}

CompiledShapes::CompiledShapes(ov::Core core, std::shared_ptr<ov::Model> model, ov::AnyMap config, ov::CompiledModel dynamic)
    : core_(std::move(core)), model_(std::move(model)), config_(std::move(config)), dynamic_(std::make_unique<Entry>()) {
    dynamic_->compiled = std::move(dynamic);
}

Entry& CompiledShapes::get(const std::vector<int64_t>& key, const std::map<std::string, ov::PartialShape>& shapes) {
    {
        std::shared_lock<std::shared_mutex> read(lock_);
        auto found = statics_.find(key);
        if (found != statics_.end()) return *found->second;
    }
    std::unique_lock<std::shared_mutex> write(lock_);  // one compilation per key, even when threads arrive together
    auto found = statics_.find(key);
    if (found != statics_.end()) return *found->second;
    if (static_cast<int>(statics_.size()) >= artifact::kMaxStaticShapes) return *dynamic_;  // full: dynamic from now on
    auto model = model_->clone();
    model->reshape(shapes);
    auto entry = std::make_unique<Entry>();
    entry->compiled = core_.compile_model(model, "CPU", config_);
    Entry& made = *entry;
    statics_.emplace(key, std::move(entry));
    return made;
}

Network::Network(const std::string& directory, const artifact::Manifest& m, const std::string& requested, int threads) {
    precision_ = requested == "auto" ? "fp32" : requested;
    if (!kPrecisions.count(precision_))
        throw OptionError("openvino: precision must be auto or one of ['fp16', 'fp32', 'int8'] (bf16 runs in the "
                          "Python runtime only), got " + py_repr(Json(requested)));
    if (threads < 0) throw OptionError("threads must be >= 0 (0: one per core), got " + std::to_string(threads));
    std::string file_precision = kPrecisions.at(precision_);
    file_ = m.onnx_file(file_precision);
    if (file_.empty()) {
        std::vector<std::string> have;
        for (const auto& [name, entry] : m.files)
            if (entry.kind == "onnx") have.push_back(entry.precision.empty() ? "?" : entry.precision);
        std::sort(have.begin(), have.end());
        std::string list;
        for (size_t i = 0; i < have.size(); ++i) list += (i ? ", " : "") + have[i];
        throw ArtifactError("artifact " + py_repr(Json(m.name)) + " has no " + file_precision + " ONNX file (it has: " +
                            (list.empty() ? "none" : list) + "); choose one of those precisions or re-export with it");
    }
    path_ = artifact::join(directory, file_);
    input_name_ = m.input.name;
    int lo = m.batch.min, hi = m.batch.max;
    std::set<int> candidates = {1, m.batch.opt, hi};
    for (int b : candidates)
        if (lo <= b && b <= hi) static_batches_.push_back(b);
    ov::Core core;
    // the bytes checked are the bytes compiled (size, sha256, no link, no external data); never the path
    std::string bytes = artifact::read_verified(directory, m, file_);
    std::shared_ptr<ov::Model> model;
    std::vector<Port> inputs, outputs;
    try {
        model = core.read_model(bytes, ov::Tensor());
        for (const auto& p : model->inputs()) inputs.push_back(port_of(p));
        for (const auto& p : model->outputs()) outputs.push_back(port_of(p));
    } catch (const std::exception& error) {
        throw ArtifactError(path_ + ": OpenVINO cannot read it (" + first_line(error) + "); re-export");
    }
    auto named = std::find_if(outputs.begin(), outputs.end(), [&](const Port& p) { return p.name == m.output.name; });
    if (inputs.size() != 1 || inputs[0].name != m.input.name || named == outputs.end())
        throw ArtifactError(path_ + ": graph inputs " + names_list(inputs) + " / outputs " + names_list(outputs) +
                            " do not match the manifest's " + py_repr(Json(m.input.name)) + " → " +
                            py_repr(Json(m.output.name)) + "; re-export the artifact");
    output_index_ = static_cast<size_t>(named - outputs.begin());
    check_graph_io(path_, m, inputs[0], *named);
    ov::AnyMap config = compile_config(threads);
    ov::CompiledModel dynamic;
    try {
        dynamic = core.compile_model(model, "CPU", config);
    } catch (const std::exception& error) {
        throw ArtifactError(path_ + ": OpenVINO cannot compile it for the CPU (" + first_line(error) + "); re-export");
    }
    shapes_ = std::make_unique<CompiledShapes>(core, model, config, std::move(dynamic));
}

std::vector<float> Network::infer(const float* batch, int64_t n, int64_t h, int64_t w, std::vector<int64_t>& out_shape) {
    std::vector<int64_t> key = {n, 1, h, w};
    Entry* entry = &shapes_->dynamic();
    if (std::find(static_batches_.begin(), static_batches_.end(), n) != static_batches_.end()) {
        try {
            entry = &shapes_->get(key, {{input_name_, ov::PartialShape({n, 1, h, w})}});
        } catch (const std::exception& error) {
            throw BackendError("openvino: OpenVINO cannot compile the graph for input shape " + tuple_text(key) + " (" +
                               first_line(error) + ")");
        }
    }
    BorrowedRequest request(*entry);
    try {
        // the caller's float32 batch is used in place; the output is copied while the request is still ours
        ov::Tensor input(ov::element::f32, ov::Shape{static_cast<size_t>(n), 1, static_cast<size_t>(h), static_cast<size_t>(w)},
                         const_cast<float*>(batch));
        request->set_input_tensor(0, input);
        request->infer();
        ov::Tensor output = request->get_output_tensor(output_index_);
        const ov::Shape shape = output.get_shape();
        out_shape.assign(shape.begin(), shape.end());
        if (output.get_element_type() != ov::element::f32)
            throw std::runtime_error("output element type " + output.get_element_type().get_type_name());
        const float* values = output.data<const float>();
        return std::vector<float>(values, values + output.get_size());
    } catch (const std::exception& error) {
        throw BackendError("openvino: OpenVINO failed to run the graph (" + first_line(error) + ")");
    }
}

}  // namespace recon::engine
