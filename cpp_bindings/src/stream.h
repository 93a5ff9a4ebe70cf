// Frame-by-frame segmentation with the detector and the tracker memory: a port of
// medsam3_rt/tracker/streaming.py (Stream.push) with the same rules, arithmetic order and
// object ids. Stream runs the graphs and keeps the memory banks; every merge decision is made
// by the pure functions of policy.h. Per-frame time and memory do not grow with the number of frames: each object's
// bank is bounded (memory.h) and the number of objects is capped.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "manifest.h"
#include "masks.h"
#include "memory.h"
#include "policy.h"
#include "preprocess.h"
#include "prompt_pack.h"

namespace m3rt {

// medsam3_rt.tracker.settings.StreamOptions; 0 / negative values mean None (the model's value).
enum class StreamMode { track, detect, auto_select };

struct StreamOptions {
    StreamMode mode = StreamMode::track;  // detect: tracker/per_frame.py FrameDetector; auto: track when the export can
    bool nms = true;
    bool fill_holes = true;
    PolicyMode policy = PolicyMode::meta;  // as the Python runtime's default
    int64_t max_objects = 0;      // 0: 16 with policy meta, the model's max_num_objects with transformers
    int64_t max_cond_frames = 0;  // 0: the model's max_cond_frame_num
    int64_t forget_after = 0;     // 0: never
    double detection_threshold = -1.0;   // < 0: the model's score_threshold_detection
    double new_object_threshold = -1.0;  // < 0: the model's new_det_thresh
};

// The objects of one frame at input resolution (FrameResult).
struct FrameObjects {
    int64_t frame_index = 0, height = 0, width = 0;
    std::vector<int64_t> object_ids;    // ascending
    std::vector<int64_t> prompt_ids;
    std::vector<float> scores;          // detection score when the object was first found
    std::vector<float> tracker_scores;  // this frame's tracker confidence
    std::vector<float> boxes;           // (N, 4)
    std::vector<int64_t> areas;
    std::vector<uint8_t> masks;         // (N, H, W) 0/1, non-overlapping within a prompt
    std::vector<uint8_t> label_map;     // (H, W)
    // preprocess, backbone, detector, tracker, merge+memory, postprocess (ms)
    std::array<double, 6> timings_ms{};
};

class Stream {
public:
    // `manifest` and `backend` are shared with the model (the stream keeps them alive).
    Stream(std::shared_ptr<const Manifest> manifest, std::shared_ptr<Backend> backend, PromptSet prompts, const StreamOptions& options,
           const Window& window);

    FrameObjects push(const ImageView& image);
    void reset();
    bool tracking() const { return tracking_; }
    int64_t frame_index() const { return t_; }
    int64_t num_objects() const { return static_cast<int64_t>(tracks_.size()); }
    // FrameDetector.next_object_id: the prompt count (object id = prompt index) without tracker.
    int64_t next_object_id() const { return tracking_ ? next_id_ : static_cast<int64_t>(prompts_.prompts.size()); }
    int64_t state_nbytes() const;
    const TrackerSettings& settings() const { return s_; }
    int64_t max_objects() const { return max_objects_; }
    int64_t max_cond() const { return max_cond_; }

private:
    struct Step {
        Planes low, masks;  // raw and shown (hole-filled) low-res logits
        std::vector<float> score;
    };

    FrameObjects push_detect_only(const ImageView& image);
    Detections detect();
    Step propagate(const std::vector<ObjectTrack*>& tracks, int64_t t);
    std::vector<std::vector<uint16_t>> encode(const Planes& masks, const std::vector<uint8_t>& binarize, const std::vector<float>& scores);
    void encode_track_memories(const std::vector<ObjectTrack*>& tracks, const MergeDecision& decision, int64_t t);
    std::vector<ObjectTrack*> add_objects(const std::vector<ObjectTrack*>& tracks, const Step& step, const MergeDecision& decision,
                                          const Detections& det, int64_t t, int64_t video_h, int64_t video_w);
    FrameObjects outputs(int64_t h, int64_t w, const std::vector<ObjectTrack*>& tracks, const Step& step, const Planes& trk_masks,
                         const std::vector<ObjectTrack*>& new_tracks, const std::vector<int64_t>& new_dets, const Recond& recond,
                         const Detections& det, const std::vector<int64_t>& hidden, int64_t t);
    void remove_objects(const MergeDecision& decision, int64_t t);
    void finish_frame(const FrameObjects& result, int64_t t);
    static TrackTable track_table(const std::vector<ObjectTrack*>& tracks);

    std::shared_ptr<const Manifest> manifest_;
    std::shared_ptr<Backend> backend_;
    std::unique_ptr<TrackerSession> session_;
    PromptSet prompts_;
    StreamOptions options_;
    Window window_;
    TrackerSettings s_;
    PolicyConfig policy_;
    bool tracking_ = true;
    bool meta_semantics_ = false;  // manifest tracker.semantics "meta": Meta's new-object path
    double memory_selection_ = -1.0;  // memory-selection threshold (manifest tracker.memory_selection); negative: off
    double frame_threshold_ = 0.5;  // detect mode: FrameDetector.threshold
    int64_t hw_ = 0, mem_ = 0, c_ = 0, m_ = 0, image_ = 0, mem_size_ = 0;
    int64_t max_objects_ = 0, max_cond_ = 0;
    std::vector<std::unique_ptr<ObjectTrack>> tracks_;  // by ascending id (insertion order)
    int64_t next_id_ = 0;
    int64_t t_ = 0;
    HotstartState hotstart_;  // policy meta: the hot-start state of the tracked objects
    std::vector<float> pixels_;
};

// StreamOptions.__post_init__'s checks, with its messages.
void check_stream_options(const StreamOptions& o);

}  // namespace m3rt
