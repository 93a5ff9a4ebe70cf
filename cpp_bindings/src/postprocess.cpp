#include "postprocess.h"

#include <cmath>

#include "masks.h"
#include "resample.h"

namespace m3rt {

void postprocess(const DetectorView& det, int64_t H, int64_t W, float min_score, double mask_threshold, Segmentation& out) {
    const int64_t P = det.P, Q = det.Q, m = det.m;
    out.P = P;
    out.height = H;
    out.width = W;
    out.scores.assign(P, 0.0f);
    out.boxes.assign(P * 4, 0.0f);
    out.query_index.assign(P, 0);
    out.areas.assign(P, 0);
    out.masks.assign(P * H * W, 0);
    out.label_map.assign(H * W, 0);
    const float threshold = static_cast<float>(mask_threshold);
    // Plain bilinear taps (antialias=False), shared by all prompts: width pass, then height pass.
    const FloatTaps tx = float_taps(m, W, false), ty = float_taps(m, H, false);
    std::vector<float> prob(m * m), rows(m * W), line(W), best_prob(H * W, 0.0f);
    for (int64_t p = 0; p < P; ++p) {
        const float presence = sigmoid(det.presence_logits[p]);
        int64_t best = 0;
        float best_score = 0.0f;
        for (int64_t q = 0; q < Q; ++q) {
            const float s = sigmoid(det.pred_logits[p * Q + q]) * presence;
            if (q == 0 || s > best_score) {  // np.argmax: the first maximum
                best = q;
                best_score = s;
            }
        }
        out.query_index[p] = best;
        out.scores[p] = best_score;
        const float* box = det.pred_boxes + (p * Q + best) * 4;
        const float scale[4] = {static_cast<float>(W), static_cast<float>(H), static_cast<float>(W), static_cast<float>(H)};
        for (int i = 0; i < 4; ++i) out.boxes[p * 4 + i] = box[i] * scale[i];
        const bool keep = best_score >= min_score;
        if (!keep) continue;  // an empty mask; it cannot win any pixel of the label map
        const float* logits = det.pred_masks + (p * Q + best) * m * m;
        for (int64_t i = 0; i < m * m; ++i) prob[i] = sigmoid(logits[i]);
        if (W != m) {
            for (int64_t y = 0; y < m; ++y) {
                for (int64_t x = 0; x < W; ++x) {
                    float acc = 0.0f;
                    for (int64_t j = 0; j < tx.k; ++j) acc += prob[y * m + tx.idx[x * tx.k + j]] * tx.w[x * tx.k + j];
                    rows[y * W + x] = acc;
                }
            }
        } else {
            rows = prob;
        }
        uint8_t* mask = &out.masks[p * H * W];
        int64_t area = 0;
        for (int64_t y = 0; y < H; ++y) {
            const float* v = &rows[y * W];
            if (H != m) {
                for (int64_t x = 0; x < W; ++x) line[x] = 0.0f;
                for (int64_t j = 0; j < ty.k; ++j) {
                    const float* src = &rows[ty.idx[y * ty.k + j] * W];
                    const float w = ty.w[y * ty.k + j];
                    for (int64_t x = 0; x < W; ++x) line[x] += src[x] * w;
                }
                v = line.data();
            }
            for (int64_t x = 0; x < W; ++x) {
                if (!(v[x] > threshold)) continue;
                mask[y * W + x] = 1;
                ++area;
                // Pixel-wise max probability; ties stay with the lower prompt index (np.argmax).
                const int64_t i = y * W + x;
                if (out.label_map[i] == 0 || v[x] > best_prob[i]) {
                    out.label_map[i] = static_cast<uint8_t>(p + 1);
                    best_prob[i] = v[x];
                }
            }
        }
        out.areas[p] = area;
    }
}

}  // namespace m3rt
