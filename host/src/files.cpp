#include "files.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace recon::files {
namespace {

// A read-only descriptor on a regular file, refusing links (O_NOFOLLOW), not waiting on FIFOs
// (O_NONBLOCK), and checking the type on the descriptor itself: what is checked is what is read.
class RegularFile {
  public:
    explicit RegularFile(const std::string& path) {
        if (is_link(path))  // O_NOFOLLOW's ELOOP would read as "too many levels of links"
            throw FileRefused(path + ": is a symbolic link; recon reads only regular files, not links");
        fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
        if (fd_ < 0) throw FileRefused(path + ": cannot be opened (" + std::strerror(errno) + ")");
        struct stat info {};
        if (::fstat(fd_, &info) != 0 || !S_ISREG(info.st_mode)) {
            ::close(fd_);
            throw FileRefused(path + ": is not a regular file (a device, FIFO, socket or folder)");
        }
    }
    ~RegularFile() { ::close(fd_); }
    RegularFile(const RegularFile&) = delete;
    RegularFile& operator=(const RegularFile&) = delete;

    // Up to `count` bytes appended to `out`; returns how many were read (fewer only at the end).
    uint64_t read_into(std::string& out, uint64_t count) {
        uint64_t done = 0;
        const size_t chunk = 1 << 20;
        std::vector<char> buffer(chunk);
        while (done < count) {
            size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, count - done));
            ssize_t got = ::read(fd_, buffer.data(), want);
            if (got < 0) {
                if (errno == EINTR) continue;
                throw FileRefused(std::string("read failed (") + std::strerror(errno) + ")");
            }
            if (got == 0) break;
            out.append(buffer.data(), static_cast<size_t>(got));
            done += static_cast<uint64_t>(got);
        }
        return done;
    }
    int fd() const { return fd_; }

  private:
    int fd_ = -1;
};

std::string held(uint64_t read, uint64_t size) {
    return read > size ? "more than " + std::to_string(size) : std::to_string(read);
}

struct DigestDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

class Sha256 {
  public:
    Sha256() : ctx_(EVP_MD_CTX_new()) {
        if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
            throw std::runtime_error("OpenSSL: cannot start a sha256 digest");
    }
    void update(const char* data, size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
    std::string hex() {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        EVP_DigestFinal_ex(ctx_.get(), digest, &length);
        static const char* digits = "0123456789abcdef";
        std::string text;
        for (unsigned int i = 0; i < length; ++i) {
            text += digits[digest[i] >> 4];
            text += digits[digest[i] & 15];
        }
        return text;
    }

  private:
    std::unique_ptr<EVP_MD_CTX, DigestDeleter> ctx_;
};

}  // namespace

bool is_link(const std::string& path) {
    struct stat info {};
    return ::lstat(path.c_str(), &info) == 0 && S_ISLNK(info.st_mode);
}

bool exists_or_link(const std::string& path) {
    struct stat info {};
    return ::lstat(path.c_str(), &info) == 0;
}

bool is_directory(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

std::string read_bounded(const std::string& path, uint64_t size) {
    RegularFile file(path);
    std::string data;
    data.reserve(static_cast<size_t>(size));
    uint64_t got = file.read_into(data, size + 1);  // one byte more tells a longer file from a whole one
    if (got != size) throw FileRefused(path + ": holds " + held(got, size) + " bytes, expected " + std::to_string(size));
    return data;
}

std::string sha256_bounded(const std::string& path, uint64_t size) {
    RegularFile file(path);
    Sha256 digest;
    uint64_t left = size + 1;
    std::vector<char> buffer(1 << 20);
    while (left > 0) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), left));
        ssize_t got = ::read(file.fd(), buffer.data(), want);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw FileRefused(path + ": cannot be read (" + std::strerror(errno) + ")");
        if (got == 0) break;
        digest.update(buffer.data(), static_cast<size_t>(got));
        left -= static_cast<uint64_t>(got);
    }
    if (left != 1) throw FileRefused(path + ": holds " + held(size + 1 - left, size) + " bytes, expected " + std::to_string(size));
    return digest.hex();
}

std::string read_at_most(const std::string& path, uint64_t limit) {
    RegularFile file(path);
    std::string data;
    if (file.read_into(data, limit + 1) > limit) throw FileRefused(path + ": larger than " + std::to_string(limit) + " bytes");
    return data;
}

std::string sha256_hex(const std::string& bytes) {
    Sha256 digest;
    digest.update(bytes.data(), bytes.size());
    return digest.hex();
}

}  // namespace recon::files
