// Separable bilinear resampling, a port of medsam3_rt/resample.py that reproduces its numbers:
// the same float64 tap weights (numpy's pairwise summation included), the same float32
// accumulation order, and for uint8 images torch's int16 fixed-point antialiased kernel
// (bit-exact with medsam3_rt.resample.resize_uint8).
#pragma once

#include <cstdint>
#include <vector>

namespace m3rt {

// Per output pixel, `k` source indices and weights (row-major [out][k]).
struct Taps {
    int64_t out = 0;
    int64_t k = 0;
    std::vector<int64_t> idx;
    std::vector<double> w;  // float64, as computed by resample._taps64
};

Taps taps64(int64_t in_size, int64_t out_size, bool antialias);

struct FloatTaps {
    int64_t out = 0, k = 0;
    std::vector<int64_t> idx;
    std::vector<float> w;
};
FloatTaps float_taps(int64_t in_size, int64_t out_size, bool antialias);

struct FixedTaps {
    int64_t out = 0, k = 0;
    std::vector<int64_t> idx;
    std::vector<int64_t> w;
    int precision = 0;
};
FixedTaps fixed_point_taps(int64_t in_size, int64_t out_size);

// numpy's pairwise summation of float64 values (what np.sum does along a contiguous axis).
double pairwise_sum(const double* a, int64_t n);

}  // namespace m3rt
