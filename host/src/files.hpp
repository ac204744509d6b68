// Reading an artifact's files as recon.runtime.io.files does: regular files only (no links, devices,
// FIFOs), never more than one byte beyond the size they must have, hashed as read.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace recon::files {

// A file recon will not read: a link, not a regular file, or not the size it should be.
class FileRefused : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Exactly `size` bytes of a regular file that holds exactly that many; never reads more than size + 1.
std::string read_bounded(const std::string& path, uint64_t size);
// The sha256 (hex) of a regular file that must hold exactly `size` bytes, reading at most size + 1.
std::string sha256_bounded(const std::string& path, uint64_t size);
// The whole of a regular file holding at most `limit` bytes.
std::string read_at_most(const std::string& path, uint64_t limit);
// The sha256 (lowercase hex) of bytes in memory.
std::string sha256_hex(const std::string& bytes);
bool is_link(const std::string& path);
bool exists_or_link(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace recon::files
