// Reads "BUILT HERE" pairs from stdin and prints "<normalised BUILT> <same> <version-compatible>" per
// line, so tests/gpu/test_trt_versions.py can check the C++ rule against medsam3_rt/engines.py.
#include <iostream>
#include <string>

#include "trt_version.h"

int main() {
    std::string built, here;
    while (std::cin >> built >> here) {
        std::cout << m3rt::normalize_tensorrt_version(built) << ' ' << m3rt::same_tensorrt_release(built, here) << ' '
                  << m3rt::version_compatible_loads(built, here) << '\n';
    }
    return 0;
}
