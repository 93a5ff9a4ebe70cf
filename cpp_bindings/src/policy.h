// The streaming merge policy as pure functions over arrays: a port of
// medsam3_rt/tracker/policy.py (same rules, arithmetic and order). No model, backend or I/O:
// Stream (stream.cpp) runs the graphs and applies the decisions to the memory banks, and
// tests/cpp/test_cpp_bindings.py feeds the recorded frames of tests/golden/tracker_policy/ to
// these functions through the internal tool and checks the Python policy's decisions.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "manifest.h"
#include "masks.h"

namespace m3rt {

// PolicyConfig: the thresholds and limits the policy reads (mode "transformers" only).
struct PolicyConfig {
    double score_threshold_detection = 0, det_nms_thresh = 0, assoc_iou_thresh = 0, trk_assoc_iou_thresh = 0, new_det_thresh = 0;
    double high_conf_thresh = 0, high_iou_thresh = 0;
    int64_t recondition_every_nth_frame = 0;
    bool recondition_on_trk_masks = true;
    double suppress_overlapping_based_on_recent_occlusion_threshold = 0;
    int64_t init_trk_keep_alive = 0, max_trk_keep_alive = 0, min_trk_keep_alive = 0;
    int64_t max_objects = 0;
    int64_t forget_after = 0;  // 0: never
    bool nms = true;
};

// PolicyConfig.from_settings (the settings already carry the options' threshold overrides).
PolicyConfig policy_config(const TrackerSettings& s, int64_t max_objects, int64_t forget_after, bool nms);

// This frame's detections that passed the score threshold (and NMS).
struct Detections {
    Planes masks;  // (D, m, m) logits
    std::vector<float> scores;
    std::vector<int64_t> prompt_ids;
};

// The per-object state the policy reads, one row per tracked object (ascending ids).
struct TrackTable {
    std::vector<int64_t> obj_ids, prompt_ids, last_occluded, keep_alive;
    size_t size() const { return obj_ids.size(); }
};

struct Association {
    std::vector<int64_t> new_dets, unmatched, matched;
    std::map<int64_t, int64_t> high_conf;  // obj id -> detection (confident, high IoU)
};

using Recond = std::map<int64_t, int64_t>;  // obj id -> detection index

struct MergeDecision {
    Association association;
    std::vector<int64_t> new_dets, new_obj_ids;
    Recond recond;
    std::vector<int64_t> keep_alive, last_occluded;
    Planes shown;         // tracks' logits after occlusion suppression
    Planes memory_masks;  // what the memory encoder writes for the existing tracks
    std::vector<float> memory_scores;
    std::vector<int64_t> rerun;  // rows re-encoded with the new objects (empty when none is new)
};

// select_detections for one prompt's Q queries: NMS (when on), then every score above the threshold.
// Appends to `out` (probs are modified: NMS-suppressed ones are zeroed).
void select_detections(std::vector<float>& probs, const float* mask_logits, int64_t Q, int64_t px, int64_t prompt, const PolicyConfig& cfg,
                       std::vector<float>& masks, Detections& out);
Association associate(const Detections& det, const Planes& trk_masks, const TrackTable& tracks, const PolicyConfig& cfg);
std::vector<int64_t> cap_new_objects(const std::vector<int64_t>& new_dets, const std::vector<float>& det_scores, int64_t num_tracks,
                                     int64_t max_objects);
std::vector<int64_t> update_keep_alive(const TrackTable& tracks, const Association& a, const PolicyConfig& cfg);
Recond reconditioning(const Association& a, const TrackTable& tracks, const std::vector<float>& trk_score_logits, int64_t t,
                      const PolicyConfig& cfg);
// Returns the masks; last_occluded receives the new last-occluded frames.
Planes suppress_recently_occluded(const Planes& trk_masks, const std::vector<int64_t>& prompt_ids, const std::vector<int64_t>& last_occluded_in,
                                  int64_t t, double threshold, std::vector<int64_t>& last_occluded);
void memory_inputs(const Planes& shown, const TrackTable& tracks, const Recond& recond, const Detections& det, const PolicyConfig& cfg,
                   Planes& mem_in, std::vector<float>& scores);
std::vector<int64_t> rerun_rows(const TrackTable& tracks, const Recond& recond, size_t num_new);
MergeDecision merge(const Detections& det, const TrackTable& tracks, const Planes& trk_masks, const std::vector<float>& trk_score_logits,
                    int64_t t, int64_t next_id, const PolicyConfig& cfg);
// forget: consecutive frames without an output mask (counts updated in place); removed[i] when an object goes.
std::vector<uint8_t> forget(const std::vector<int64_t>& obj_ids, std::vector<int64_t>& empty_frames, const std::vector<int64_t>& shown,
                            int64_t forget_after);

}  // namespace m3rt
