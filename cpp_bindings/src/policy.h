// The streaming merge policy as pure functions over arrays: a port of
// medsam3_rt/tracker/policy.py and hotstart.py (same rules, arithmetic and order; both modes). No model, backend or I/O:
// Stream (stream.cpp) runs the graphs and applies the decisions to the memory banks, and
// tests/cpp/test_cpp_bindings.py feeds the recorded frames of tests/golden/tracker_policy/ to
// these functions through the internal tool and checks the Python policy's decisions.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "manifest.h"
#include "masks.h"

namespace m3rt {

// PolicyConfig.mode: "meta" is Meta's SAM3 track management (hot-start removal, no re-encoding
// of existing objects when objects are added, stale tracks replaced at the cap), "transformers"
// transformers' Sam3VideoModel in streaming mode (no removal, new detections beyond the cap dropped).
enum class PolicyMode { meta, transformers };

// A track removed by the hot-start rules on its first tracked frame yields to any overlap (Meta's value).
constexpr int64_t ALWAYS_OCCLUDED = 100000;

// Meta's default cap on simultaneously tracked objects in mode "meta" (settings.DEFAULT_MAX_OBJECTS).
constexpr int64_t DEFAULT_MAX_OBJECTS = 16;

// PolicyConfig: the thresholds and limits the policy reads.
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
    PolicyMode mode = PolicyMode::transformers;
    // Meta's hot-start rules (mode "meta" only; hotstart.py)
    int64_t hotstart_delay = 15, hotstart_unmatch_thresh = 8, hotstart_dup_thresh = 8;
    bool suppress_unmatched_only_within_hotstart = true;
    bool decrease_trk_keep_alive_for_empty_masklets = false;
};

// PolicyConfig.from_settings (the settings already carry the options' threshold overrides).
PolicyConfig policy_config(const TrackerSettings& s, int64_t max_objects, int64_t forget_after, bool nms,
                           PolicyMode mode = PolicyMode::transformers);

// This frame's detections that passed the score threshold (and NMS).
struct Detections {
    Planes masks;  // (D, m, m) logits
    std::vector<float> scores;
    std::vector<int64_t> prompt_ids;
};

// The per-object state the policy reads, one row per tracked object (ascending ids).
struct TrackTable {
    std::vector<int64_t> obj_ids, prompt_ids, last_occluded, keep_alive;
    std::vector<int64_t> first_frame;  // frame each object was added (mode "meta" reads it; may be empty otherwise)
    size_t size() const { return obj_ids.size(); }
};

struct Association {
    std::vector<int64_t> new_dets, unmatched, matched;
    std::map<int64_t, int64_t> high_conf;  // obj id -> detection (confident, high IoU)
    std::vector<std::vector<int64_t>> det_to_matched;  // detection -> obj ids it matches (assoc_iou_thresh)
    std::vector<int64_t> empty;                        // obj ids of tracks with an empty mask
};

// hotstart.HotstartState: what Meta keeps across frames for the hot-start rules.
struct HotstartState {
    std::map<int64_t, int64_t> first_frame;
    std::map<int64_t, std::vector<int64_t>> unmatched_frames;
    std::map<int64_t, int64_t> keep_alive;
    std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> overlap_frames;  // (older, younger) -> frames
    std::set<int64_t> removed;
};

// hotstart.HotstartStep: the new state, objects removed now, objects suppressed on this frame.
struct HotstartStep {
    HotstartState state;
    std::set<int64_t> removed, suppressed;
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
    std::vector<int64_t> rerun;  // rows re-encoded with the new objects (empty when none is new; always in mode "meta")
    std::vector<int64_t> removed;  // obj ids the hot-start rules remove after this frame (hidden from its output)
    std::vector<int64_t> evicted;  // obj ids of stale tracks removed after this frame to make room at the cap
    std::vector<int64_t> hidden;   // obj ids hidden on this frame only (Meta's keep-alive suppression)
    bool has_hotstart = false;     // mode "meta": `hotstart` is the state after this frame
    HotstartState hotstart;
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
// Frame t of Meta's `_process_hotstart` (forward direction); `state` is not modified.
HotstartStep hotstart_step(const HotstartState& state, int64_t t, const std::vector<std::vector<int64_t>>& det_to_matched,
                           const std::vector<int64_t>& new_obj_ids, const std::vector<int64_t>& empty_obj_ids,
                           const std::vector<int64_t>& unmatched_obj_ids, const PolicyConfig& cfg);
// `state` without what can no longer change a decision (in place).
void prune(HotstartState& state, const std::vector<int64_t>& alive, int64_t t, const PolicyConfig& cfg);
// Up to `count` obj ids a full stream may give up for new objects (mode "meta"): empty now or
// keep-alive <= 0, never matched on this frame; empty first, then lowest keep-alive, then lowest id.
std::vector<int64_t> stale_tracks(const TrackTable& tracks, const Association& a, const std::vector<int64_t>& keep_alive, int64_t count);
// `hotstart` is the state before this frame (mode "meta"; nullptr: a fresh state).
MergeDecision merge(const Detections& det, const TrackTable& tracks, const Planes& trk_masks, const std::vector<float>& trk_score_logits,
                    int64_t t, int64_t next_id, const PolicyConfig& cfg, const HotstartState* hotstart = nullptr);
// forget: consecutive frames without an output mask (counts updated in place); removed[i] when an object goes.
std::vector<uint8_t> forget(const std::vector<int64_t>& obj_ids, std::vector<int64_t>& empty_frames, const std::vector<int64_t>& shown,
                            int64_t forget_after);

}  // namespace m3rt
