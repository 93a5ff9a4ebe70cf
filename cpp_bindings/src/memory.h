// Per-object memory banks of the streaming tracker, bounded: a port of
// medsam3_rt/tracker/memory.py. An object keeps at most max_cond conditioning entries and the
// entries of the last max_pointers - 1 frames; only the last num_maskmem - 1 of those keep
// their spatial memory. Spatial memories are stored as bfloat16 bit patterns.
// With memory selection (Meta's video tracker), a step reads only tracked frames whose score is
// above a threshold, counted by rank, and always the previous frame (see memory.py).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace m3rt {

// What one frame leaves in an object's bank.
struct MemoryEntry {
    std::vector<float> pointer;     // (C,) object pointer
    std::vector<uint16_t> maskmem;  // (HW * mem) bfloat16 bits; empty until encoded (or after pruning)
    bool has_maskmem() const { return !maskmem.empty(); }
};

struct ObjectTrack {
    int64_t obj_id = 0;
    int64_t prompt_id = 0;
    float det_score = 0;  // detection score when the object was created
    int64_t first_frame = 0;
    std::map<int64_t, MemoryEntry> cond;    // conditioning frames
    std::map<int64_t, MemoryEntry> recent;  // tracked (non-conditioning) frames
    // memory-selection terms of tracked frames (memory_score), kept a little longer than their entries
    std::map<int64_t, std::pair<float, float>> scores;
    int64_t last_occluded = -1;             // last frame with an empty or suppressed mask; -1 never
    int64_t keep_alive = 0;
    int64_t empty_frames = 0;  // consecutive frames with an empty output mask

    MemoryEntry* entry(int64_t frame);
    // Re-anchor: this frame's entry becomes a conditioning frame.
    void promote(int64_t frame);
    // Drop what frame+1 and later can no longer read. `valid`: with memory selection, the group's
    // tracked frames up to `frame` scored above the threshold (valid_frames); null without.
    void prune(int64_t frame, int64_t num_maskmem, int64_t max_pointers, int64_t max_cond, const std::vector<int64_t>* valid = nullptr);
    int64_t nbytes() const;
};

// The padded tracker_step memory inputs of N tracks (tracker_step's mem_* and ptr_* tensors).
struct StepFeeds {
    int64_t N = 0, M = 0, K = 0, hw = 0, mem_dim = 0, channels = 0;
    std::vector<float> mem_feats;    // (N, M, hw, mem_dim)
    std::vector<int64_t> mem_tpos;   // (N, M)
    std::vector<uint8_t> mem_valid;  // (N, M) bool
    std::vector<float> obj_ptrs;     // (N, K, C)
    std::vector<float> ptr_tpos;     // (N, K)
    std::vector<uint8_t> ptr_valid;  // (N, K) bool
};

// memory.memory_score: (object score rescaled to [0, 1] where positive, else 0; best predicted IoU).
std::pair<float, float> memory_score(float object_score_logit, const float* iou_scores, int64_t n);
// memory.group_score: Meta's cal_mem_score over one group, with its (B,1) x (B,) broadcast.
float group_score(const std::vector<std::pair<float, float>>& terms);
// memory.valid_frames: per group (first_frame), its tracked frames 1..frame (ascending) scored above threshold.
std::map<int64_t, std::vector<int64_t>> valid_frames(const std::vector<ObjectTrack*>& tracks, int64_t frame, double threshold);
// memory.select_frames: Meta's frame_filter, the frames a step at `frame` reads, oldest first.
std::vector<int64_t> select_frames(const std::vector<int64_t>& valid, int64_t frame, int64_t max_num);

// memory.gather: conditioning memories (temporal row num_maskmem-1), then the frames
// num_maskmem-1 .. 1 steps back (rows k-1); pointers of the conditioning frames and of the last
// max_pointers-1 frames with offsets normalised by max_pointers-1. With `selection` (the
// threshold; negative: off) the tracked frames come from select_frames, by rank.
StepFeeds gather(const std::vector<ObjectTrack*>& tracks, int64_t frame, int64_t num_maskmem, int64_t max_pointers, int64_t hw,
                 int64_t mem_dim, int64_t channels, double selection = -1.0);

}  // namespace m3rt
