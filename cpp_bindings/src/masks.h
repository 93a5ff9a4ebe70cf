// Mask arithmetic of the streaming merge: a port of medsam3_rt/tracker/masks.py (mask IoU,
// greedy mask NMS, hole filling with 8-connected components, non-overlap constraints, boxes,
// bfloat16 storage) and of resample.resize for float32 planes. The same numbers as numpy:
// IoUs are float32 quotients of exact pixel counts, resizes accumulate float32 products tap by
// tap, comparisons with Python floats are float32 comparisons (NumPy 2 casting rules).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace m3rt {

constexpr float NO_OBJ_LOGIT = -10.0f;  // what the merge writes into suppressed masks

// N planes of h x w float32 (or uint8 for the binary helpers), contiguous, row-major.
struct Planes {
    int64_t n = 0, h = 0, w = 0;
    std::vector<float> v;
    Planes() = default;
    Planes(int64_t n_, int64_t h_, int64_t w_, float fill = 0.0f) : n(n_), h(h_), w(w_), v(size_t(n_ * h_ * w_), fill) {}
    int64_t plane() const { return h * w; }
    float* at(int64_t i) { return v.data() + i * plane(); }
    const float* at(int64_t i) const { return v.data() + i * plane(); }
};

// resample.resize(x, (oh, ow), axes=(1, 2), antialias=...) of N float32 planes: width pass
// first, then height pass, each skipped when the size is unchanged.
Planes resize_planes(const Planes& in, int64_t oh, int64_t ow, bool antialias);

// float32 IoU of two binary masks of `n` pixels, like mask_iou (0 when both are empty).
float mask_iou(const uint8_t* a, const uint8_t* b, int64_t n);
// (A, B) matrix of IoUs between A masks and B masks of n pixels each.
std::vector<float> mask_iou_matrix(const std::vector<const uint8_t*>& a, const std::vector<const uint8_t*>& b, int64_t n);

// nms_masks: keep[q] for detections above prob_threshold that survive greedy mask NMS
// (visited by decreasing probability, ties: lower index first).
std::vector<uint8_t> nms_masks(const float* probs, const float* mask_logits, int64_t Q, int64_t pixels, double prob_threshold,
                               double iou_threshold);

// Per pixel, the area of its 8-connected component of `binary` (0 outside it).
std::vector<int64_t> component_areas(const uint8_t* binary, int64_t h, int64_t w);

// fill_holes: background components of <= max_area pixels -> 0.1, then foreground components of
// <= min(max_area, area/2) pixels -> -0.1. In place; nothing when max_area <= 0.
void fill_holes(Planes& logits, int64_t max_area);

// suppress_shrunk: within each prompt group, objects keeping < 30 % of their area under the
// pixel-wise non-overlap constraint are clamped to <= -10. In place.
void suppress_shrunk(Planes& logits, const std::vector<int64_t>& groups, double shrink_threshold = 0.3);

// pixelwise_non_overlap: each pixel stays only in the highest plane (np.argmax: the first
// maximum); the others are clamped to <= -10. In place; nothing for fewer than 2 planes.
void pixelwise_non_overlap(Planes& logits);

// meta_new_object_memory (medsam3_rt/tracker/masks.py): what Meta's video predictor encodes into
// memory for objects added on one frame, from their detection logits (n x m x m) and the frame's
// size. Returns the memory encoder's input (n x M x M, logits of the binary mask's area fractions,
// clipped to +-88) and fills `scores` with +10 (non-empty mask at M) or -10.
Planes meta_new_object_memory(const Planes& det_logits, int64_t video_h, int64_t video_w, int64_t image_size, int64_t memory_size,
                              std::vector<float>& scores);

// object_wise_non_overlap: per group, a pixel claimed by several masks goes to the highest score
// (ties: the first object). masks: n x pixels, 0/1, in place.
void object_wise_non_overlap(std::vector<uint8_t>& masks, int64_t pixels, const std::vector<float>& scores,
                             const std::vector<int64_t>& groups);

// boxes_from_masks: x0 y0 x1 y1 (inclusive pixel indices; zeros when empty).
void box_from_mask(const uint8_t* mask, int64_t h, int64_t w, float box[4]);

// float32 <-> bfloat16 bit patterns, rounding to nearest even like torch (to_bfloat16).
inline uint16_t to_bfloat16(float x) {
    uint32_t bits;
    static_assert(sizeof bits == sizeof x, "float is 32 bits");
    std::memcpy(&bits, &x, sizeof bits);
    bits = bits + 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}
inline float from_bfloat16(uint16_t b) {
    const uint32_t bits = static_cast<uint32_t>(b) << 16;
    float x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
}

// np.exp on float32 arrays as numpy computes it on this CPU: its AVX2/AVX512F kernel on x86-64
// CPUs that have AVX2 and FMA3, libm's expf elsewhere (numpy's scalar loop).
float numpy_expf(float x);
// postprocess.sigmoid in float32 (exp of a non-positive argument only), with numpy's exp.
float sigmoid(float x);

}  // namespace m3rt
