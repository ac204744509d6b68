// recon-host: the command-line host built on the library. NPY (or raw float32 with --shape) in, NPY out,
// the consistency scores as JSON on stdout. Exit 0 on success, 1 on a refusal (one "error:" line), 2 on
// a usage mistake.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "npy.hpp"
#include "recon/recon.hpp"

namespace {

const char* kUsage =
    "usage: recon-host ARTIFACT INPUT --out OUT.npy [options]\n"
    "       recon-host ARTIFACT --verify [--precision P] [--threads N]   the golden set, as `recon verify`\n"
    "  INPUT            .npy (float32/64, 8/16/32-bit integers; (H, W), (B, H, W) or (B, 1, H, W))\n"
    "                   or raw little-endian float32 with --shape\n"
    "  --shape B,H,W    shape of a raw float32 INPUT (any rank 2-4)\n"
    "  --out PATH       output images (float32 NPY, the input's rank)\n"
    "  --threads N      CPU threads (default: one per core)\n"
    "  --precision P    auto, fp32, fp16, int8\n"
    "  --tile N / --overlap N / --blend gaussian|cosine   tiling of images of any size\n"
    "  --clip / --no-clip   clip to the output range (default: the manifest's)\n"
    "  --no-consistency     no scores\n"
    "Prints {\"shape\", \"plan\", \"scores\": [{residual, flagged, reasons, statistics}]} as JSON.\n";

struct Usage : std::runtime_error {
    using std::runtime_error::runtime_error;
};

int to_int(const std::string& option, const std::string& text) {
    try {
        size_t used = 0;
        int value = std::stoi(text, &used);
        if (used != text.size()) throw std::invalid_argument(text);
        return value;
    } catch (const std::exception&) {
        throw Usage(option + " takes an integer, got '" + text + "'");
    }
}

std::vector<int64_t> parse_shape(const std::string& text) {
    std::vector<int64_t> shape;
    std::stringstream in(text);
    std::string part;
    while (std::getline(in, part, ',')) shape.push_back(to_int("--shape", part));
    return shape;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    std::vector<std::string> positional;
    std::string out, shape_text;
    bool verify = false;
    recon::Options options;
    try {
        for (size_t i = 0; i < args.size(); ++i) {
            const std::string& a = args[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= args.size()) throw Usage(a + " needs a value");
                return args[++i];
            };
            if (a == "-h" || a == "--help") {
                std::cout << kUsage;
                return 0;
            } else if (a == "--verify") verify = true;
            else if (a == "--out") out = value();
            else if (a == "--shape") shape_text = value();
            else if (a == "--threads") options.threads = to_int(a, value());
            else if (a == "--precision") options.precision = value();
            else if (a == "--tile") options.tile = to_int(a, value());
            else if (a == "--overlap") options.overlap = to_int(a, value());
            else if (a == "--blend") options.blend = value();
            else if (a == "--clip") options.clip = true;
            else if (a == "--no-clip") options.clip = false;
            else if (a == "--no-consistency") options.consistency = false;
            else if (!a.empty() && a[0] == '-') throw Usage("unknown option " + a);
            else positional.push_back(a);
        }
        if (verify && (positional.size() != 1 || !out.empty())) throw Usage("--verify takes ARTIFACT alone");
        if (!verify && (positional.size() != 2 || out.empty())) throw Usage("ARTIFACT, INPUT and --out are required");
    } catch (const Usage& error) {
        std::cerr << "error: " << error.what() << "\n" << kUsage;
        return 2;
    }
    try {
        if (verify) {  // exit 0: within tolerance; 1: not (or no golden set), the line says why
            recon::Verification result = recon::Reconstructor(positional[0], options).verify();
            std::cout << result.line() << "\n";
            return result.passed ? 0 : 1;
        }
        const std::string& input = positional[1];
        recon::npy::Array array;
        const uint64_t cap = 1ULL << 31;  // 2 GiB of input in one file
        if (shape_text.empty()) {
            array = recon::npy::read(input, cap);
        } else {
            array.shape = parse_shape(shape_text);
            uint64_t count = 1;
            for (int64_t d : array.shape) {
                if (d < 0 || (d && count > cap / 4 / static_cast<uint64_t>(d))) throw recon::InputError("--shape too large");
                count *= static_cast<uint64_t>(d);
            }
            std::ifstream in(input, std::ios::binary | std::ios::ate);
            if (!in) throw recon::InputError(input + ": cannot be opened");
            if (static_cast<uint64_t>(in.tellg()) != count * 4)
                throw recon::InputError(input + ": holds " + std::to_string(static_cast<uint64_t>(in.tellg())) +
                                        " bytes, --shape " + shape_text + " of float32 needs " + std::to_string(count * 4));
            in.seekg(0);
            array.bytes.resize(static_cast<size_t>(count * 4));
            in.read(array.bytes.data(), static_cast<std::streamsize>(array.bytes.size()));
        }
        recon::Reconstructor rec(positional[0], options);
        recon::Result result = rec.run(array.bytes.data(), array.dtype, array.shape);
        recon::npy::write_float32(out, result.images, result.shape);
        nlohmann::ordered_json report;
        report["shape"] = result.shape;
        int64_t h = array.shape.size() >= 2 ? array.shape[array.shape.size() - 2] : 0;
        int64_t w = array.shape.empty() ? 0 : array.shape.back();
        report["plan"] = rec.size_plan(h, w);
        report["file"] = rec.model_file();
        report["scores"] = nlohmann::ordered_json::array();
        for (const recon::Score& s : result.scores) {
            nlohmann::ordered_json row;
            row["residual"] = s.residual;
            row["flagged"] = s.flagged;
            row["reasons"] = s.reasons;
            nlohmann::ordered_json stats = nlohmann::ordered_json::object();
            for (const auto& [name, value] : s.statistics) stats[name] = value;
            row["statistics"] = stats;
            report["scores"].push_back(row);
        }
        std::cout << report.dump() << "\n";
        return 0;
    } catch (const recon::Error& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    } catch (const std::exception& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
}
