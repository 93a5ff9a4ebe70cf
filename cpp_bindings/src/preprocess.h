// Image -> the backbone's pixel_values, a port of medsam3_rt/preprocess.py (input rules) and
// resample.py (resizing). The image is read in place through its row stride: no copy of the
// input is made; the width pass writes an H x S intermediate, the height pass S x S.
#pragma once

#include <cstdint>
#include <string>

#include "manifest.h"
#include "medsam3rt/medsam3rt.h"

namespace m3rt {

constexpr int64_t MIN_SIDE = 2;
constexpr int64_t MAX_PIXELS = int64_t(1) << 28;

struct ImageView {
    const uint8_t* data = nullptr;
    int64_t width = 0, height = 0;
    int64_t stride = 0;   // bytes between rows
    int channels = 0;     // stored channels: 1, 3 or 4
    bool bgr = false;     // stored order B, G, R (A)
    bool uint16 = false;  // 2 bytes per sample, native byte order
};

struct Window {
    bool enabled = false;
    double low = 0, high = 0;
};

// Validate a C image descriptor (pointer, sizes, stride, format, type) and describe it.
ImageView image_view(const medsam3rt_image& image);
// Validate an intensity window: finite low < high (IntensityWindow's rule).
void check_window(const Window& w);
// (1, 3, S, S) float32 normalised input of the image backbone, written to `out`.
void pixel_values(const ImageView& image, const Preprocess& pre, const Window& window, float* out);

// Python's repr() of a float ("400.0", "0.1", "inf"), for messages that quote numbers.
std::string py_float_repr(double v);
std::string py_float_repr(float v);  // shortest float32 repr (what numpy prints for a float32)

}  // namespace m3rt
