// NPY files (numpy's format, versions 1-3) for the command-line host: little-endian float32/float64 and
// 8/16/32-bit integers, C order; the declared shape is checked against the file's size before reading.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recon/recon.hpp"

namespace recon::npy {

struct Array {
    DType dtype = DType::f32;
    std::vector<int64_t> shape;
    std::vector<char> bytes;
};

size_t item_size(DType dtype);
Array read(const std::string& path, uint64_t max_bytes);
void write_float32(const std::string& path, const std::vector<float>& values, const std::vector<int64_t>& shape);

}  // namespace recon::npy
