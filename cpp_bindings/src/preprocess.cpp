#include "preprocess.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "error.h"
#include "resample.h"

namespace m3rt {
namespace {

std::string with_commas(int64_t v) {
    std::string s = std::to_string(v), out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (i && (s.size() - i) % 3 == 0) out.push_back(',');
        out.push_back(s[i]);
    }
    return out;
}

// Reads channel c (0 = R, 1 = G, 2 = B) of pixel (x, y) in the image's own sample type.
struct Sampler {
    const ImageView& im;
    int ch[3];
    explicit Sampler(const ImageView& image) : im(image) {
        for (int c = 0; c < 3; ++c) ch[c] = im.channels == 1 ? 0 : (im.bgr ? 2 - c : c);
    }
    uint32_t operator()(int64_t x, int64_t y, int c) const {
        const uint8_t* row = im.data + y * im.stride;
        const int64_t i = x * im.channels + ch[c];
        if (!im.uint16) return row[i];
        uint16_t v;
        std::memcpy(&v, row + 2 * i, 2);  // rows need not be 2-byte aligned
        return v;
    }
};

// The float path's intensity mapping (preprocess.to_rgb): identity for uint8 without a window,
// else (clip(v, lo, hi) - lo) * float32(255 / (hi - lo)) in float32, or 0 for a constant image.
struct Intensity {
    bool identity = true;
    bool zero = false;
    float lo = 0, hi = 0, k = 0;
    float operator()(uint32_t raw) const {
        const float v = static_cast<float>(raw);
        if (identity) return v;
        if (zero) return 0.0f;
        return (std::min(std::max(v, lo), hi) - lo) * k;
    }
};

Intensity intensity(const ImageView& im, const Sampler& at, const Window& window, int nch) {
    Intensity f;
    if (!im.uint16 && !window.enabled) return f;
    f.identity = false;
    double lo, hi;
    if (window.enabled) {
        lo = window.low;
        hi = window.high;
    } else {
        uint32_t mn = std::numeric_limits<uint32_t>::max(), mx = 0;
        for (int64_t y = 0; y < im.height; ++y) {
            for (int64_t x = 0; x < im.width; ++x) {
                for (int c = 0; c < nch; ++c) {
                    const uint32_t v = at(x, y, c);
                    mn = std::min(mn, v);
                    mx = std::max(mx, v);
                }
            }
        }
        lo = static_cast<float>(mn);
        hi = static_cast<float>(mx);
    }
    if (!(hi > lo)) {
        f.zero = true;
        return f;
    }
    // numpy casts the Python-float bounds to float32 (weak scalars); the scale is float64 first.
    f.lo = static_cast<float>(lo);
    f.hi = static_cast<float>(hi);
    f.k = static_cast<float>(255.0 / (hi - lo));
    return f;
}

// Antialiased uint8 resize in torch's fixed-point arithmetic (resample.resize_uint8): width
// pass, uint8, height pass, uint8. Returns S x S x nch.
std::vector<uint8_t> resize_uint8(const ImageView& im, const Sampler& at, int nch, int64_t S) {
    const int64_t W = im.width, H = im.height;
    std::vector<uint8_t> tmp;  // H x S x nch after the width pass
    auto clip8 = [](int64_t acc, int p) { return static_cast<uint8_t>(std::min<int64_t>(std::max<int64_t>(acc >> p, 0), 255)); };
    if (W != S) {
        const FixedTaps t = fixed_point_taps(W, S);
        tmp.resize(H * S * nch);
        for (int64_t y = 0; y < H; ++y) {
            for (int64_t x = 0; x < S; ++x) {
                for (int c = 0; c < nch; ++c) {
                    int64_t acc = int64_t(1) << (t.precision - 1);
                    for (int64_t j = 0; j < t.k; ++j) acc += static_cast<int64_t>(at(t.idx[x * t.k + j], y, c)) * t.w[x * t.k + j];
                    tmp[(y * S + x) * nch + c] = clip8(acc, t.precision);
                }
            }
        }
    } else {
        tmp.resize(H * S * nch);
        for (int64_t y = 0; y < H; ++y) {
            for (int64_t x = 0; x < S; ++x) {
                for (int c = 0; c < nch; ++c) tmp[(y * S + x) * nch + c] = static_cast<uint8_t>(at(x, y, c));
            }
        }
    }
    if (H == S) return tmp;
    const FixedTaps t = fixed_point_taps(H, S);
    std::vector<uint8_t> out(S * S * nch);
    std::vector<int64_t> acc(S * nch);
    for (int64_t y = 0; y < S; ++y) {
        std::fill(acc.begin(), acc.end(), int64_t(1) << (t.precision - 1));
        for (int64_t j = 0; j < t.k; ++j) {
            const uint8_t* src = &tmp[t.idx[y * t.k + j] * S * nch];
            const int64_t w = t.w[y * t.k + j];
            for (int64_t i = 0; i < S * nch; ++i) acc[i] += static_cast<int64_t>(src[i]) * w;
        }
        for (int64_t i = 0; i < S * nch; ++i) out[y * S * nch + i] = clip8(acc[i], t.precision);
    }
    return out;
}

// Float resize (resample.resize): float32 weights, float32 accumulation in tap order, width
// pass first. Returns S x S x nch.
std::vector<float> resize_float(const ImageView& im, const Sampler& at, const Intensity& f, int nch, int64_t S, bool antialias) {
    const int64_t W = im.width, H = im.height;
    std::vector<float> tmp(H * S * nch);
    if (W != S) {
        const FloatTaps t = float_taps(W, S, antialias);
        for (int64_t y = 0; y < H; ++y) {
            for (int64_t x = 0; x < S; ++x) {
                for (int c = 0; c < nch; ++c) {
                    float acc = 0.0f;
                    for (int64_t j = 0; j < t.k; ++j) acc += f(at(t.idx[x * t.k + j], y, c)) * t.w[x * t.k + j];
                    tmp[(y * S + x) * nch + c] = acc;
                }
            }
        }
    } else {
        for (int64_t y = 0; y < H; ++y) {
            for (int64_t x = 0; x < S; ++x) {
                for (int c = 0; c < nch; ++c) tmp[(y * S + x) * nch + c] = f(at(x, y, c));
            }
        }
    }
    if (H == S) return tmp;
    const FloatTaps t = float_taps(H, S, antialias);
    std::vector<float> out(S * S * nch, 0.0f);
    for (int64_t y = 0; y < S; ++y) {
        float* dst = &out[y * S * nch];
        for (int64_t j = 0; j < t.k; ++j) {
            const float* src = &tmp[t.idx[y * t.k + j] * S * nch];
            const float w = t.w[y * t.k + j];
            for (int64_t i = 0; i < S * nch; ++i) dst[i] += src[i] * w;
        }
    }
    return out;
}

template <typename T>
void normalise(const std::vector<T>& hwc, int nch, int64_t S, const Preprocess& pre, float* out) {
    for (int c = 0; c < 3; ++c) {
        // Same fused form as transformers: (x - mean/rescale) / (std/rescale), in float32.
        const float offset = static_cast<float>(pre.mean[c]) / static_cast<float>(pre.rescale_factor);
        const float scale = static_cast<float>(pre.std[c]) / static_cast<float>(pre.rescale_factor);
        const int src_c = nch == 1 ? 0 : c;
        float* plane = out + c * S * S;
        for (int64_t i = 0; i < S * S; ++i) plane[i] = (static_cast<float>(hwc[i * nch + src_c]) - offset) / scale;
    }
}

}  // namespace

std::string py_float_repr(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    std::string s(buf, r.ptr);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
}

std::string py_float_repr(float v) {
    if (!std::isfinite(v)) return py_float_repr(static_cast<double>(v));
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    std::string s(buf, r.ptr);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
}

ImageView image_view(const medsam3rt_image& image) {
    ImageView v;
    switch (image.format) {
        case MEDSAM3RT_GRAY: v.channels = 1; break;
        case MEDSAM3RT_RGB: v.channels = 3; break;
        case MEDSAM3RT_BGR: v.channels = 3; v.bgr = true; break;
        case MEDSAM3RT_RGBA: v.channels = 4; break;
        case MEDSAM3RT_BGRA: v.channels = 4; v.bgr = true; break;
        default:
            throw InputError("image format " + std::to_string(image.format) +
                             " is not supported; use MEDSAM3RT_GRAY, _RGB, _BGR, _RGBA or _BGRA");
    }
    if (image.type != MEDSAM3RT_UINT8 && image.type != MEDSAM3RT_UINT16) {
        throw InputError("image pixel type " + std::to_string(image.type) + " is not supported; use MEDSAM3RT_UINT8 or MEDSAM3RT_UINT16");
    }
    v.uint16 = image.type == MEDSAM3RT_UINT16;
    v.width = image.width;
    v.height = image.height;
    if (v.height < MIN_SIDE || v.width < MIN_SIDE) {
        throw InputError("image is " + std::to_string(v.height) + " x " + std::to_string(v.width) + " pixels; at least " +
                         std::to_string(MIN_SIDE) + " x " + std::to_string(MIN_SIDE) + " is needed");
    }
    if (v.height * v.width > MAX_PIXELS) {
        throw InputError("image is " + std::to_string(v.height) + " x " + std::to_string(v.width) + " pixels, over the " +
                         with_commas(MAX_PIXELS) + "-pixel limit; downsample it first");
    }
    if (image.data == nullptr) throw UsageError("image data is NULL");
    const int64_t row_bytes = v.width * v.channels * (v.uint16 ? 2 : 1);
    v.stride = image.stride_bytes == 0 ? row_bytes : image.stride_bytes;
    if (v.stride < row_bytes) {
        throw InputError("image stride_bytes " + std::to_string(image.stride_bytes) + " is less than one row (" + std::to_string(v.width) +
                         " pixels x " + std::to_string(v.channels * (v.uint16 ? 2 : 1)) + " bytes = " + std::to_string(row_bytes) +
                         "); pass 0 for tightly packed rows");
    }
    v.data = static_cast<const uint8_t*>(image.data);
    return v;
}

void check_window(const Window& w) {
    if (!w.enabled) return;
    if (!(std::isfinite(w.low) && std::isfinite(w.high)) || w.high <= w.low) {
        throw InputError("intensity window needs finite low < high, got (" + py_float_repr(w.low) + ", " + py_float_repr(w.high) + ")");
    }
}

void pixel_values(const ImageView& image, const Preprocess& pre, const Window& window, float* out) {
    check_window(window);
    const Sampler at(image);
    const int nch = image.channels == 1 ? 1 : 3;  // alpha is dropped, gray is repeated at the end
    const int64_t S = pre.image_size;
    if (!image.uint16 && !window.enabled && pre.antialias) {
        normalise(resize_uint8(image, at, nch, S), nch, S, pre, out);
    } else {
        normalise(resize_float(image, at, intensity(image, at, window, nch), nch, S, pre.antialias), nch, S, pre, out);
    }
}

}  // namespace m3rt
