// TensorRT release numbers as medsam3_rt/engines.py compares them (no TensorRT headers needed,
// so the rule is compiled and tested on machines without TensorRT).
#pragma once

#include <string>
#include <vector>

namespace m3rt {

// The numeric release in a version string: "10.7.0.post1" -> {10,7,0}, "10.8.0.43" -> {10,8,0,43}.
// Parts that are not plain numbers (post1, +cuda12, rc1) are packaging, not the library.
std::vector<int> tensorrt_release(const std::string& version);

// "major.minor.patch[.build]" of tensorrt_release.
std::string normalize_tensorrt_version(const std::string& version);

// A plain engine runs only in the release that built it: same major.minor.patch, and the same
// build where both strings carry one (Python wheels of TensorRT 10.0-10.7 report none).
bool same_tensorrt_release(const std::string& built, const std::string& here);

// A version-compatible engine: same major, and the runtime not older than the builder.
bool version_compatible_loads(const std::string& built, const std::string& here);

}  // namespace m3rt
