#include "resample.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "error.h"

namespace m3rt {

double pairwise_sum(const double* a, int64_t n) {
    // numpy/_core/src/umath/loops_utils.h.src: 8 partial sums per block of <= 128, halves above.
    if (n < 8) {
        double res = 0.0;
        for (int64_t i = 0; i < n; ++i) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = a[j];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8) {
            for (int j = 0; j < 8; ++j) r[j] += a[i + j];
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

Taps taps64(int64_t in_size, int64_t out_size, bool antialias) {
    if (in_size < 1 || out_size < 1) {
        throw InternalError("cannot resample " + std::to_string(in_size) + " -> " + std::to_string(out_size) + " pixels");
    }
    Taps t;
    t.out = out_size;
    const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
    if (antialias) {
        const double support = scale >= 1.0 ? scale : 1.0;
        const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
        std::vector<double> center(out_size);
        std::vector<int64_t> xmin(out_size), xmax(out_size);
        for (int64_t i = 0; i < out_size; ++i) {
            center[i] = scale * (static_cast<double>(i) + 0.5);
            xmin[i] = std::max<int64_t>(static_cast<int64_t>(center[i] - support + 0.5), 0);  // truncation toward zero
            xmax[i] = std::min<int64_t>(static_cast<int64_t>(center[i] + support + 0.5), in_size);
            t.k = std::max(t.k, xmax[i] - xmin[i]);
        }
        t.idx.resize(out_size * t.k);
        t.w.resize(out_size * t.k);
        for (int64_t i = 0; i < out_size; ++i) {
            double* w = &t.w[i * t.k];
            for (int64_t j = 0; j < t.k; ++j) {
                const int64_t idx = xmin[i] + j;
                double v = 1.0 - std::fabs((static_cast<double>(idx) - center[i] + 0.5) * invscale);
                w[j] = (idx < xmax[i] && v > 0) ? v : 0.0;
                t.idx[i * t.k + j] = std::min(idx, in_size - 1);
            }
            const double total = pairwise_sum(w, t.k);
            for (int64_t j = 0; j < t.k; ++j) w[j] /= total;
        }
        return t;
    }
    t.k = 2;
    t.idx.resize(out_size * 2);
    t.w.resize(out_size * 2);
    for (int64_t i = 0; i < out_size; ++i) {
        const double src = std::max((static_cast<double>(i) + 0.5) * scale - 0.5, 0.0);
        const int64_t i0 = std::min(static_cast<int64_t>(src), in_size - 1);
        const int64_t i1 = std::min(i0 + 1, in_size - 1);
        const double l1 = src - static_cast<double>(i0);
        t.idx[2 * i] = i0;
        t.idx[2 * i + 1] = i1;
        t.w[2 * i] = 1.0 - l1;
        t.w[2 * i + 1] = l1;
    }
    return t;
}

FloatTaps float_taps(int64_t in_size, int64_t out_size, bool antialias) {
    Taps t = taps64(in_size, out_size, antialias);
    FloatTaps f{t.out, t.k, std::move(t.idx), {}};
    f.w.assign(t.w.begin(), t.w.end());  // float64 -> float32, round to nearest like numpy's astype
    return f;
}

FixedTaps fixed_point_taps(int64_t in_size, int64_t out_size) {
    Taps t = taps64(in_size, out_size, true);
    FixedTaps f{t.out, t.k, std::move(t.idx), {}, 0};
    const double w_max = *std::max_element(t.w.begin(), t.w.end());
    // torch (like Pillow) uses the largest precision for which the biggest weight fits an int16.
    while (f.precision < 22 && static_cast<int64_t>(0.5 + w_max * static_cast<double>(int64_t(1) << (f.precision + 1))) < (1 << 15)) {
        ++f.precision;
    }
    f.w.resize(t.w.size());
    const double one = static_cast<double>(int64_t(1) << f.precision);
    for (size_t i = 0; i < t.w.size(); ++i) f.w[i] = static_cast<int64_t>(std::trunc(0.5 + t.w[i] * one));
    return f;
}

}  // namespace m3rt
