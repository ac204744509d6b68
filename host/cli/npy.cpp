#include "npy.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <stdexcept>

namespace recon::npy {
namespace {

const std::map<std::string, DType> kDescr = {
    {"<f4", DType::f32}, {"<f8", DType::f64}, {"|u1", DType::u8}, {"|i1", DType::i8}, {"<u2", DType::u16},
    {"<i2", DType::i16}, {"<u4", DType::u32}, {"<i4", DType::i32}};

[[noreturn]] void refuse(const std::string& path, const std::string& why) { throw InputError(path + ": " + why); }

}  // namespace

size_t item_size(DType dtype) {
    switch (dtype) {
        case DType::f64: return 8;
        case DType::u8:
        case DType::i8: return 1;
        case DType::u16:
        case DType::i16: return 2;
        default: return 4;
    }
}

Array read(const std::string& path, uint64_t max_bytes) {
    std::ifstream in(path, std::ios::binary);
    if (!in) refuse(path, "cannot be opened");
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) refuse(path, "not an NPY file");
    int major = static_cast<unsigned char>(magic[6]);
    uint32_t header_len = 0;
    if (major == 1) {
        unsigned char b[2];
        if (!in.read(reinterpret_cast<char*>(b), 2)) refuse(path, "truncated NPY header");
        header_len = b[0] | (b[1] << 8);
    } else if (major == 2 || major == 3) {
        unsigned char b[4];
        if (!in.read(reinterpret_cast<char*>(b), 4)) refuse(path, "truncated NPY header");
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    } else {
        refuse(path, "NPY version " + std::to_string(major) + " is not known");
    }
    if (header_len > 65536) refuse(path, "NPY header longer than 64 KiB");
    std::string header(header_len, '\0');
    if (!in.read(header.data(), header_len)) refuse(path, "truncated NPY header");
    std::smatch descr, order, shape;
    if (!std::regex_search(header, descr, std::regex("'descr':\\s*'([^']*)'")) ||
        !std::regex_search(header, order, std::regex("'fortran_order':\\s*(True|False)")) ||
        !std::regex_search(header, shape, std::regex("'shape':\\s*\\(([0-9,\\s]*)\\)")))
        refuse(path, "unreadable NPY header");
    auto kind = kDescr.find(descr[1]);
    if (kind == kDescr.end())
        refuse(path, "NPY dtype " + descr[1].str() + " is not taken (little-endian float32/64, 8/16/32-bit integers)");
    if (order[1] == "True") refuse(path, "Fortran-ordered NPY arrays are not taken; save a C-ordered array");
    Array array;
    array.dtype = kind->second;
    std::string dims = shape[1];
    std::regex number("[0-9]+");
    uint64_t count = 1;
    for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
        if (it->str().size() > 12) refuse(path, "NPY shape too large");
        int64_t d = std::stoll(it->str());
        array.shape.push_back(d);
        if (d && count > max_bytes / static_cast<uint64_t>(d)) refuse(path, "NPY array larger than the cap");
        count *= static_cast<uint64_t>(d);
    }
    uint64_t size = count * item_size(array.dtype);
    if (size > max_bytes) refuse(path, "NPY array of " + std::to_string(size) + " bytes exceeds the cap");
    array.bytes.resize(static_cast<size_t>(size));
    if (!in.read(array.bytes.data(), static_cast<std::streamsize>(size))) refuse(path, "NPY data shorter than its shape");
    return array;
}

void write_float32(const std::string& path, const std::vector<float>& values, const std::vector<int64_t>& shape) {
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
    size_t total = 10 + header.size() + 1;
    header += std::string((64 - total % 64) % 64, ' ') + "\n";  // data aligned to 64 bytes
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw InputError(path + ": cannot be written");
        out.write("\x93NUMPY\x01\x00", 8);
        unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xFF), static_cast<unsigned char>(header.size() >> 8)};
        out.write(reinterpret_cast<char*>(len), 2);
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
        if (!out) throw InputError(path + ": cannot be written");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw InputError(path + ": cannot be written");
}

}  // namespace recon::npy
