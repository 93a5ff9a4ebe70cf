#include "trt_version.h"

#include <cctype>
#include <sstream>

namespace m3rt {

std::vector<int> tensorrt_release(const std::string& version) {
    std::vector<int> out;
    std::stringstream ss(version);
    std::string part;
    while (out.size() < 4 && std::getline(ss, part, '.')) {
        size_t n = 0;
        while (n < part.size() && n < 9 && std::isdigit(static_cast<unsigned char>(part[n]))) ++n;
        if (n == 0) break;
        out.push_back(std::stoi(part.substr(0, n)));
        if (n != part.size()) break;  // "0+cuda12", "0rc1": a local or pre-release tag ends the number
    }
    return out;
}

std::string normalize_tensorrt_version(const std::string& version) {
    const auto r = tensorrt_release(version);
    if (r.empty()) return version;
    std::string out;
    for (size_t i = 0; i < r.size(); ++i) out += (i ? "." : "") + std::to_string(r[i]);
    return out;
}

bool same_tensorrt_release(const std::string& built, const std::string& here) {
    const auto a = tensorrt_release(built), b = tensorrt_release(here);
    if (a.size() < 3 || b.size() < 3) return false;
    for (int i = 0; i < 3; ++i) {
        if (a[i] != b[i]) return false;
    }
    return a.size() < 4 || b.size() < 4 || a[3] == b[3];
}

bool version_compatible_loads(const std::string& built, const std::string& here) {
    auto a = tensorrt_release(built), b = tensorrt_release(here);
    if (a.empty() || b.empty() || a[0] != b[0]) return false;
    a.resize(3, 0);
    b.resize(3, 0);
    return !(b < a);
}

}  // namespace m3rt
