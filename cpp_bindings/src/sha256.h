// SHA-256 (FIPS 180-4), for the manifest's file checks. Written here rather than taken from
// OpenSSL so that device software links nothing beyond OpenVINO; tests check it against
// the FIPS 180-2 example vectors and Python's hashlib on the export's files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace m3rt {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t size);
    std::string hexdigest();  // finishes the hash; the object must not be updated afterwards

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buffered_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t size);
// Streams the file in 4 MiB blocks; throws m3rt::Error (model) if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace m3rt
