#include "masks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>

#include "resample.h"

namespace m3rt {

namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// numpy's float32 exp on x86-64 CPUs with AVX2 and FMA3 (or AVX512F): simd_exp_FLOAT of
// numpy/_core/src/umath/loops_exponent_log.dispatch.c.src, one lane at a time (Cody-Waite
// range reduction, a 5th/2nd-order rational approximation, scaling by 2^k; std::fma is the
// same correctly rounded operation as the vector FMA). Bit-exact with np.exp on float32
// arrays (checked on 24 million inputs, denormal results included); up to 2.5 ulp from libm.
float numpy_simd_expf(float x) {
    if (std::isnan(x)) return x;
    if (x >= 88.72283935546875f) return INFINITY;
    if (x <= -103.97208404541015625f) return 0.0f;
    float q = x * 1.442695040888963407359924681001892137f;  // round to nearest integer:
    q = q + 0x1.8p23f;
    q = q - 0x1.8p23f;
    float r = std::fma(q, -6.93145752e-1f, x);
    r = std::fma(q, -1.42860677e-6f, r);
    r = std::fma(q, 0.0f, r);
    float num = std::fma(5.082762527590693718096e-04f, r, 6.757896990527504603057e-03f);
    num = std::fma(num, r, 5.114512081637298353406e-02f);
    num = std::fma(num, r, 2.473615434895520810817e-01f);
    num = std::fma(num, r, 7.257664613233124478488e-01f);
    num = std::fma(num, r, 9.999999999980870924916e-01f);
    float den = std::fma(2.159509375685829852307e-02f, r, -2.742335390411667452936e-01f);
    den = std::fma(den, r, 1.0f);
    float poly = num / den;
    uint32_t bits;
    std::memcpy(&bits, &poly, sizeof bits);
    if (q <= -125.0f) {  // denormal result: scale by 2^-125, then divide by the rest
        const float diff = 0.0f - (q - -125.0f);
        const int32_t two_power_diff = int32_t(1) << static_cast<int32_t>(diff);
        bits += static_cast<uint32_t>(int32_t(-125)) << 23;
        std::memcpy(&poly, &bits, sizeof poly);
        return poly / static_cast<float>(two_power_diff);
    }
    bits += static_cast<uint32_t>(static_cast<int32_t>(q)) << 23;
    std::memcpy(&poly, &bits, sizeof poly);
    return poly;
}

bool numpy_uses_simd_exp() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
#endif

}  // namespace

float numpy_expf(float x) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (numpy_uses_simd_exp()) return numpy_simd_expf(x);
#endif
    return std::exp(x);  // numpy's scalar loop: libm's expf
}

float sigmoid(float x) {
    const float e = numpy_expf(-std::fabs(x));
    return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

Planes resize_planes(const Planes& in, int64_t oh, int64_t ow, bool antialias) {
    Planes cur = in;
    if (cur.w != ow) {
        const FloatTaps t = float_taps(cur.w, ow, antialias);
        Planes out(cur.n, cur.h, ow);
        for (int64_t i = 0; i < cur.n * cur.h; ++i) {
            const float* src = cur.v.data() + i * cur.w;
            float* dst = out.v.data() + i * ow;
            for (int64_t x = 0; x < ow; ++x) {
                float acc = 0.0f;
                for (int64_t k = 0; k < t.k; ++k) acc += src[t.idx[x * t.k + k]] * t.w[x * t.k + k];
                dst[x] = acc;
            }
        }
        cur = std::move(out);
    }
    if (cur.h != oh) {
        const FloatTaps t = float_taps(cur.h, oh, antialias);
        Planes out(cur.n, oh, cur.w);
        for (int64_t i = 0; i < cur.n; ++i) {
            const float* src = cur.at(i);
            float* dst = out.at(i);
            for (int64_t y = 0; y < oh; ++y) {
                float* row = dst + y * cur.w;  // zero-initialised
                for (int64_t k = 0; k < t.k; ++k) {
                    const float* s = src + t.idx[y * t.k + k] * cur.w;
                    const float wk = t.w[y * t.k + k];
                    for (int64_t x = 0; x < cur.w; ++x) row[x] += s[x] * wk;
                }
            }
        }
        cur = std::move(out);
    }
    return cur;
}

float mask_iou(const uint8_t* a, const uint8_t* b, int64_t n) {
    int64_t inter = 0, ca = 0, cb = 0;
    for (int64_t i = 0; i < n; ++i) {
        ca += a[i];
        cb += b[i];
        inter += a[i] & b[i];
    }
    const float uni = static_cast<float>(ca + cb - inter);
    return static_cast<float>(inter) / std::max(uni, 1.0f);
}

std::vector<float> mask_iou_matrix(const std::vector<const uint8_t*>& a, const std::vector<const uint8_t*>& b, int64_t n) {
    std::vector<float> out(a.size() * b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        for (size_t j = 0; j < b.size(); ++j) out[i * b.size() + j] = mask_iou(a[i], b[j], n);
    }
    return out;
}

std::vector<uint8_t> nms_masks(const float* probs, const float* mask_logits, int64_t Q, int64_t pixels, double prob_threshold,
                               double iou_threshold) {
    std::vector<uint8_t> keep(static_cast<size_t>(Q), 0);
    const float pt = static_cast<float>(prob_threshold), it = static_cast<float>(iou_threshold);
    std::vector<int64_t> order;
    for (int64_t q = 0; q < Q; ++q) {
        if (probs[q] > pt) order.push_back(q);
    }
    if (order.empty()) return keep;
    // argsort(-probs, kind="stable"): decreasing probability, ties in index order.
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return -probs[a] < -probs[b]; });
    const size_t n = order.size();
    std::vector<uint8_t> bin(n * size_t(pixels));
    for (size_t i = 0; i < n; ++i) {
        const float* m = mask_logits + order[i] * pixels;
        for (int64_t p = 0; p < pixels; ++p) bin[i * pixels + p] = m[p] > 0.0f;
    }
    std::vector<uint8_t> alive(n, 1);
    for (size_t i = 0; i < n; ++i) {
        if (!alive[i]) continue;
        keep[size_t(order[i])] = 1;
        for (size_t j = i + 1; j < n; ++j) {
            if (alive[j] && !(mask_iou(&bin[i * pixels], &bin[j * pixels], pixels) <= it)) alive[j] = 0;
        }
    }
    return keep;
}

std::vector<int64_t> component_areas(const uint8_t* binary, int64_t h, int64_t w) {
    const int64_t n = h * w;
    std::vector<int64_t> label(static_cast<size_t>(n), -1), areas, stack;
    for (int64_t start = 0; start < n; ++start) {
        if (!binary[start] || label[start] >= 0) continue;
        const int64_t id = static_cast<int64_t>(areas.size());
        int64_t count = 0;
        stack.assign(1, start);
        label[start] = id;
        while (!stack.empty()) {
            const int64_t p = stack.back();
            stack.pop_back();
            ++count;
            const int64_t y = p / w, x = p % w;
            for (int64_t dy = -1; dy <= 1; ++dy) {
                const int64_t yy = y + dy;
                if (yy < 0 || yy >= h) continue;
                for (int64_t dx = -1; dx <= 1; ++dx) {
                    const int64_t xx = x + dx;
                    if (xx < 0 || xx >= w) continue;
                    const int64_t q = yy * w + xx;
                    if (binary[q] && label[q] < 0) {
                        label[q] = id;
                        stack.push_back(q);
                    }
                }
            }
        }
        areas.push_back(count);
    }
    std::vector<int64_t> out(static_cast<size_t>(n), 0);
    for (int64_t p = 0; p < n; ++p) {
        if (label[p] >= 0) out[p] = areas[size_t(label[p])];
    }
    return out;
}

void fill_holes(Planes& logits, int64_t max_area) {
    if (max_area <= 0 || logits.v.empty()) return;
    const int64_t px = logits.plane();
    std::vector<uint8_t> bin(static_cast<size_t>(px));
    for (int64_t i = 0; i < logits.n; ++i) {
        float* v = logits.at(i);
        for (int64_t p = 0; p < px; ++p) bin[p] = v[p] <= 0.0f;
        std::vector<int64_t> areas = component_areas(bin.data(), logits.h, logits.w);
        for (int64_t p = 0; p < px; ++p) {
            if (bin[p] && areas[p] <= max_area) v[p] = 0.1f;
        }
        int64_t fg = 0;
        for (int64_t p = 0; p < px; ++p) fg += (bin[p] = v[p] > 0.0f);
        const int64_t limit = std::min(fg / 2, max_area);
        areas = component_areas(bin.data(), logits.h, logits.w);
        for (int64_t p = 0; p < px; ++p) {
            if (bin[p] && areas[p] <= limit) v[p] = -0.1f;
        }
    }
}

void suppress_shrunk(Planes& logits, const std::vector<int64_t>& groups, double shrink_threshold) {
    const int64_t px = logits.plane();
    for (int64_t g : std::set<int64_t>(groups.begin(), groups.end())) {
        std::vector<int64_t> idx;
        for (size_t i = 0; i < groups.size(); ++i) {
            if (groups[i] == g) idx.push_back(int64_t(i));
        }
        if (idx.size() <= 1) continue;
        std::vector<int64_t> before(idx.size(), 0), after(idx.size(), 0);
        for (int64_t p = 0; p < px; ++p) {
            size_t win = 0;
            float best = logits.at(idx[0])[p];
            for (size_t a = 0; a < idx.size(); ++a) {
                const float v = logits.at(idx[a])[p];
                before[a] += v > 0.0f;
                if (a > 0 && v > best) {  // np.argmax: the first maximum
                    best = v;
                    win = a;
                }
            }
            after[win] += best > 0.0f;
        }
        for (size_t a = 0; a < idx.size(); ++a) {
            const double b = static_cast<double>(std::max<int64_t>(before[a], 1));
            if (static_cast<double>(after[a]) / b < shrink_threshold) {
                float* v = logits.at(idx[a]);
                for (int64_t p = 0; p < px; ++p) v[p] = std::min(v[p], NO_OBJ_LOGIT);
            }
        }
    }
}

void pixelwise_non_overlap(Planes& logits) {
    if (logits.n <= 1) return;
    const int64_t px = logits.plane();
    for (int64_t p = 0; p < px; ++p) {
        int64_t win = 0;
        float best = logits.at(0)[p];
        for (int64_t a = 1; a < logits.n; ++a) {
            if (logits.at(a)[p] > best) {  // np.argmax: the first maximum
                best = logits.at(a)[p];
                win = a;
            }
        }
        for (int64_t a = 0; a < logits.n; ++a) {
            if (a != win) logits.at(a)[p] = std::min(logits.at(a)[p], NO_OBJ_LOGIT);
        }
    }
}

Planes meta_new_object_memory(const Planes& det_logits, int64_t video_h, int64_t video_w, int64_t image_size, int64_t memory_size,
                              std::vector<float>& scores) {
    const int64_t n = det_logits.n, m = det_logits.h;
    // the tracker's input mask: the logits resized (bilinear) to M and thresholded at 0
    Planes inputs = resize_planes(det_logits, memory_size, memory_size, false);
    scores.assign(size_t(n), -10.0f);
    for (int64_t i = 0; i < n; ++i) {
        float* v = inputs.at(i);
        for (int64_t p = 0; p < inputs.plane(); ++p) {
            v[p] = v[p] > 0.0f ? 1.0f : 0.0f;
            if (v[p] > 0.0f) scores[size_t(i)] = 10.0f;
        }
    }
    // kept at video resolution as +-1024 logits, then to m and to the image size
    Planes video = resize_planes(inputs, video_h, video_w, true);
    for (float& v : video.v) v = v > 0.5f ? 1024.0f : -1024.0f;
    Planes high = resize_planes(resize_planes(video, m, m, true), image_size, image_size, false);
    pixelwise_non_overlap(high);
    for (float& v : high.v) v = v > 0.0f ? 1.0f : 0.0f;
    // the binary mask's area fraction at M, passed as its logit (the encoder applies sigmoid)
    Planes out = resize_planes(high, memory_size, memory_size, true);
    for (float& p : out.v) {
        const float q = std::min(1.0f, std::max(0.0f, p));  // a resize's rounding may step past 0 or 1
        const float logit = std::log(q) - std::log1p(-q);   // +-inf at 1 and 0, clipped below
        p = std::min(88.0f, std::max(-88.0f, logit));
    }
    return out;
}

void object_wise_non_overlap(std::vector<uint8_t>& masks, int64_t pixels, const std::vector<float>& scores,
                             const std::vector<int64_t>& groups) {
    const std::vector<uint8_t> in = masks;
    for (int64_t g : std::set<int64_t>(groups.begin(), groups.end())) {
        std::vector<int64_t> idx;
        for (size_t i = 0; i < groups.size(); ++i) {
            if (groups[i] == g) idx.push_back(int64_t(i));
        }
        if (idx.size() <= 1) continue;
        for (int64_t p = 0; p < pixels; ++p) {
            size_t win = 0;
            float best = 0.0f;
            for (size_t a = 0; a < idx.size(); ++a) {
                const float claim = in[idx[a] * pixels + p] ? scores[idx[a]] : 0.0f;
                if (a == 0 || claim > best) {
                    best = claim;
                    win = a;
                }
            }
            for (size_t a = 0; a < idx.size(); ++a) masks[idx[a] * pixels + p] = in[idx[a] * pixels + p] && a == win;
        }
    }
}

void box_from_mask(const uint8_t* mask, int64_t h, int64_t w, float box[4]) {
    int64_t x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (int64_t y = 0; y < h; ++y) {
        const uint8_t* row = mask + y * w;
        for (int64_t x = 0; x < w; ++x) {
            if (!row[x]) continue;
            x0 = std::min(x0, x);
            x1 = std::max(x1, x);
            y0 = std::min(y0, y);
            y1 = std::max(y1, y);
        }
    }
    if (x1 < 0) {
        box[0] = box[1] = box[2] = box[3] = 0.0f;
        return;
    }
    box[0] = float(x0);
    box[1] = float(y0);
    box[2] = float(x1);
    box[3] = float(y1);
}

}  // namespace m3rt
