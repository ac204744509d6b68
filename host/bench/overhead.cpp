// The host library's per-call cost over raw OpenVINO on the same graph, compiled alike (f32, LATENCY, one
// stream, the same threads, a static shape), timed interleaved so drift hits both equally; and the cold
// start (open + first image) of the library. Used by bench/host_overhead.py, which prints the table.
//
//   host_overhead ARTIFACT BATCH ITERS THREADS [SIDE]   → one JSON line (SIDE: for any-size artifacts)
#include <openvino/openvino.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <vector>

#include "recon/recon.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5 && argc != 6) {
        std::cerr << "usage: host_overhead ARTIFACT BATCH ITERS THREADS [SIDE]\n";
        return 2;
    }
    const std::string artifact = argv[1];
    const int64_t batch = std::stoll(argv[2]);
    const int iters = std::stoi(argv[3]), threads = std::stoi(argv[4]);
    auto cold = Clock::now();
    recon::Options options;
    options.threads = threads;
    options.consistency = false;  // the network's path only: the check is extra work, timed on its own below
    recon::Reconstructor rec(artifact, options);
    auto shape = rec.input_shape(batch);
    if (argc == 6 && rec.size_plan(std::stoll(argv[5]), std::stoll(argv[5])) == "whole") shape[2] = shape[3] = std::stoll(argv[5]);
    std::vector<float> images(static_cast<size_t>(batch * shape[2] * shape[3]));
    std::mt19937 rng(0);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    for (float& v : images) v = uniform(rng);
    std::vector<int64_t> dims(shape.begin(), shape.end());
    rec.run(images.data(), dims);
    const double cold_start = seconds_since(cold);

    // raw OpenVINO: the same file, compiled with the same properties for the same static shape
    ov::Core core;
    auto model = core.read_model(artifact + "/" + rec.model_file());
    model->reshape({{model->input().get_any_name(), ov::PartialShape(dims)}});
    ov::AnyMap config = {ov::hint::inference_precision(ov::element::f32),
                         ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::num_streams(1)};
    if (threads > 0) config.emplace(ov::inference_num_threads(threads));
    auto compiled = core.compile_model(model, "CPU", config);
    auto request = compiled.create_infer_request();
    ov::Tensor input(ov::element::f32, ov::Shape(dims.begin(), dims.end()), images.data());
    std::vector<float> copy;
    auto raw_call = [&] {
        request.set_input_tensor(input);
        request.infer();
        ov::Tensor out = request.get_output_tensor();
        copy.assign(out.data<const float>(), out.data<const float>() + out.get_size());  // as the host copies
    };
    raw_call();

    recon::Options scored = options;
    scored.consistency = true;
    recon::Reconstructor with_check(artifact, scored);
    with_check.run(images.data(), dims);

    std::vector<double> host_times, raw_times, check_times;
    for (int i = 0; i < iters; ++i) {  // interleaved: A B C A B C ...
        auto t = Clock::now();
        rec.run(images.data(), dims);
        host_times.push_back(seconds_since(t));
        t = Clock::now();
        raw_call();
        raw_times.push_back(seconds_since(t));
        t = Clock::now();
        with_check.run(images.data(), dims);
        check_times.push_back(seconds_since(t));
    }
    std::cout << "{\"batch\": " << batch << ", \"iters\": " << iters << ", \"threads\": " << threads
              << ", \"side\": " << shape[2] << ", \"cold_start_s\": " << cold_start
              << ", \"host_median_s\": " << median(host_times) << ", \"raw_median_s\": " << median(raw_times)
              << ", \"host_with_scores_median_s\": " << median(check_times) << "}\n";
    return 0;
}
