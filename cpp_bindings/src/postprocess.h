// Detector outputs -> masks, scores, boxes and a label map at input resolution: a port of
// medsam3_rt/postprocess.py and Segmenter._postprocess (paper protocol, Medical SAM3 Sec. 4.2).
#pragma once

#include <cstdint>
#include <vector>

namespace m3rt {

// Borrowed detector outputs for P prompts (row-major float32, shapes as in the contract).
struct DetectorView {
    int64_t P = 0, Q = 0, m = 0;
    const float* pred_logits = nullptr;      // (P, Q)
    const float* pred_boxes = nullptr;       // (P, Q, 4) normalised xyxy
    const float* presence_logits = nullptr;  // (P, 1)
    const float* pred_masks = nullptr;       // (P, Q, m, m) logits
};

struct Segmentation {
    int64_t P = 0, height = 0, width = 0;
    std::vector<float> scores;         // (P,)
    std::vector<float> boxes;          // (P, 4) pixels
    std::vector<int64_t> query_index;  // (P,)
    std::vector<int64_t> areas;        // (P,)
    std::vector<uint8_t> masks;        // (P, H, W) 0/1
    std::vector<uint8_t> label_map;    // (H, W)
};

// score = sigmoid(logit) * sigmoid(presence); top-1 query per prompt (ties: lowest index);
// its sigmoid probabilities upsampled bilinearly (align_corners=False) to H x W, > threshold;
// prompts scoring below min_score get an empty mask; label map by pixel-wise max probability.
void postprocess(const DetectorView& det, int64_t height, int64_t width, float min_score, double mask_threshold, Segmentation& out);

}  // namespace m3rt
