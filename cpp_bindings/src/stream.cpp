#include "stream.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <set>

#include "error.h"
#include "postprocess.h"

namespace m3rt {
namespace {

class Clock {
public:
    explicit Clock(std::array<double, 6>& ms) : ms_(ms), t_(std::chrono::steady_clock::now()) {}
    void lap(int stage) {
        const auto now = std::chrono::steady_clock::now();
        ms_[size_t(stage)] += std::chrono::duration<double, std::milli>(now - t_).count();
        t_ = now;
    }

private:
    std::array<double, 6>& ms_;
    std::chrono::steady_clock::time_point t_;
};

enum Stage { PREPROCESS, BACKBONE, DETECTOR, TRACKER, MERGE, POSTPROCESS };

// Rows `rows` of `in` as new planes.
Planes take_rows(const Planes& in, const std::vector<int64_t>& rows) {
    Planes out(static_cast<int64_t>(rows.size()), in.h, in.w);
    for (size_t k = 0; k < rows.size(); ++k) std::copy(in.at(rows[k]), in.at(rows[k]) + in.plane(), out.at(int64_t(k)));
    return out;
}

Planes concat(const Planes& a, const Planes& b) {
    if (a.n == 0) return b;
    if (b.n == 0) return a;
    Planes out = a;
    out.n += b.n;
    out.v.insert(out.v.end(), b.v.begin(), b.v.end());
    return out;
}

bool any_positive(const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        if (v[i] > 0.0f) return true;
    }
    return false;
}

}  // namespace

void check_stream_options(const StreamOptions& o) {
    const std::pair<const char*, int64_t> counts[] = {
        {"max_objects", o.max_objects}, {"max_cond_frames", o.max_cond_frames}, {"forget_after", o.forget_after}};
    for (const auto& [name, value] : counts) {
        if (value < 0) throw UsageError(std::string(name) + " must be >= 1 (or 0 for the default), got " + std::to_string(value));
    }
    const std::pair<const char*, double> thresholds[] = {{"detection_threshold", o.detection_threshold},
                                                         {"new_object_threshold", o.new_object_threshold}};
    for (const auto& [name, value] : thresholds) {
        if (!(value < 0.0) && !(value >= 0.0 && value <= 1.0)) {
            throw UsageError(std::string(name) + " must be within 0..1 (or negative for the model's), got " + py_float_repr(value));
        }
    }
}

Stream::Stream(std::shared_ptr<const Manifest> manifest, std::shared_ptr<Backend> backend, PromptSet prompts, const StreamOptions& options,
               const Window& window)
    : manifest_(std::move(manifest)), backend_(std::move(backend)), prompts_(std::move(prompts)), options_(options), window_(window) {
    const Manifest& m = *manifest_;
    check_stream_options(options_);
    tracking_ = options_.mode == StreamMode::track || (options_.mode == StreamMode::auto_select && m.has_tracker);
    if (!tracking_) {  // FrameDetector: the detection threshold of the options, else the model's, else 0.5
        frame_threshold_ = options_.detection_threshold >= 0.0 ? options_.detection_threshold : 0.5;
        if (options_.detection_threshold < 0.0) frame_threshold_ = tracker_float(m, "score_threshold_detection", 0.5);
        image_ = m.dims.image_size;
        m_ = m.dims.mask_size();
        pixels_.resize(size_t(3 * image_ * image_));
        session_ = backend_->open_tracker(false);
        return;
    }
    if (!m.has_tracker) {
        throw ModelError("this export has no tracker graphs (exported from a " + (m.source_class.empty() ? std::string("Sam3Model") : m.source_class) +
                         "); export a Sam3VideoModel checkpoint to track objects, or open the stream with mode MEDSAM3RT_STREAM_DETECT "
                         "for independent frames");
    }
    // Tracker semantics (manifest tracker.semantics): "meta", the exporter's default, adds objects
    // as Meta's video predictor does (tracker_init fed with the detection logits, the first memory
    // from meta_new_object_memory); "transformers" as Sam3VideoModel. Manifests without the field
    // predate it and followed transformers.
    const std::string semantics = tracker_string(m, "semantics", "transformers");
    if (semantics != "meta" && semantics != "transformers") {
        throw ModelError("manifest 'tracker': semantics must be 'meta' or 'transformers', got '" + semantics + "'");
    }
    meta_semantics_ = semantics == "meta";
    // Memory selection (memory.h): as Meta's video tracker when tracker.memory_selection is true
    // (absent: with semantics "meta"), reading frames scored above memory_selection_threshold
    if (tracker_bool(m, "memory_selection", meta_semantics_)) memory_selection_ = tracker_float(m, "memory_selection_threshold", 0.01);
    s_ = tracker_settings(m);
    if (options_.detection_threshold >= 0.0) s_.score_threshold_detection = options_.detection_threshold;
    if (options_.new_object_threshold >= 0.0) s_.new_det_thresh = options_.new_object_threshold;
    const gc::ModelDims& d = m.dims;
    hw_ = d.feat_size() * d.feat_size();
    mem_ = d.memory_channels;
    c_ = d.fpn_channels;
    m_ = d.mask_size();
    image_ = d.image_size;
    mem_size_ = 4 * d.mask_size();
    max_objects_ = options_.max_objects ? options_.max_objects : options_.policy == PolicyMode::meta ? DEFAULT_MAX_OBJECTS : s_.max_num_objects;
    max_cond_ = options_.max_cond_frames ? options_.max_cond_frames : s_.max_cond_frame_num;
    policy_ = policy_config(s_, max_objects_, options_.forget_after, options_.nms, options_.policy);
    pixels_.resize(size_t(3 * image_ * image_));
    session_ = backend_->open_tracker(true);
}

void Stream::reset() {
    tracks_.clear();
    next_id_ = 0;
    t_ = 0;
    hotstart_ = HotstartState{};
}

int64_t Stream::state_nbytes() const {
    int64_t n = 0;
    for (const auto& t : tracks_) n += t->nbytes();
    return n;
}

FrameObjects Stream::push_detect_only(const ImageView& image) {
    std::array<double, 6> ms{};
    Clock clock(ms);
    pixel_values(image, manifest_->preprocess, window_, pixels_.data());
    clock.lap(PREPROCESS);
    session_->encode_image(pixels_.data());
    clock.lap(BACKBONE);
    const PromptSet& ps = prompts_;
    const TextInput text{static_cast<int64_t>(ps.prompts.size()), ps.T, ps.C, ps.features.data(), ps.mask.data()};
    Segmentation seg;
    session_->detect(text, [&](const DetectorView& v) {
        clock.lap(DETECTOR);
        if (v.m != m_ || v.P != text.P) throw InternalError("detector returned " + std::to_string(v.P) + " x " + std::to_string(v.m) + " px masks");
        // top-1 query per prompt, kept when its score reaches the threshold (FrameDetector.push)
        postprocess(v, image.height, image.width, static_cast<float>(frame_threshold_), manifest_->mask_threshold, seg);
    });
    FrameObjects r;
    r.frame_index = t_;
    r.height = image.height;
    r.width = image.width;
    const int64_t hw = r.height * r.width;
    for (int64_t p = 0; p < seg.P; ++p) {
        if (seg.areas[p] == 0) continue;
        r.object_ids.push_back(p);
        r.prompt_ids.push_back(p);
        r.scores.push_back(seg.scores[p]);
        r.tracker_scores.push_back(seg.scores[p]);
        r.areas.push_back(seg.areas[p]);
        r.masks.insert(r.masks.end(), seg.masks.begin() + p * hw, seg.masks.begin() + (p + 1) * hw);
        float box[4];
        box_from_mask(&seg.masks[size_t(p * hw)], r.height, r.width, box);
        r.boxes.insert(r.boxes.end(), box, box + 4);
    }
    r.label_map = std::move(seg.label_map);
    clock.lap(POSTPROCESS);
    r.timings_ms = ms;
    ++t_;
    return r;
}

FrameObjects Stream::push(const ImageView& image) {
    if (!tracking_) return push_detect_only(image);
    std::array<double, 6> ms{};
    Clock clock(ms);
    const int64_t t = t_;
    pixel_values(image, manifest_->preprocess, window_, pixels_.data());
    clock.lap(PREPROCESS);
    session_->encode_image(pixels_.data());
    clock.lap(BACKBONE);
    const Detections det = detect();
    clock.lap(DETECTOR);
    std::vector<ObjectTrack*> tracks;
    for (auto& tr : tracks_) tracks.push_back(tr.get());
    const TrackTable table = track_table(tracks);
    const Step step = propagate(tracks, t);
    clock.lap(TRACKER);
    // the merge is decided by the policy (policy.cpp); this applies it to the memory banks
    const MergeDecision decision = merge(det, table, step.masks, step.score, t, next_id_, policy_, &hotstart_);
    for (size_t i = 0; i < tracks.size(); ++i) {
        tracks[i]->keep_alive = decision.keep_alive[i];
        tracks[i]->last_occluded = decision.last_occluded[i];
        if (decision.recond.count(tracks[i]->obj_id)) tracks[i]->promote(t);
    }
    if (!tracks.empty()) encode_track_memories(tracks, decision, t);
    const std::vector<ObjectTrack*> new_tracks = add_objects(tracks, step, decision, det, t, image.height, image.width);
    clock.lap(MERGE);
    // objects removed now and objects hidden on this frame are dropped before the non-overlap (as Meta)
    std::vector<int64_t> hidden = decision.removed;
    hidden.insert(hidden.end(), decision.hidden.begin(), decision.hidden.end());
    FrameObjects result =
        outputs(image.height, image.width, tracks, step, decision.shown, new_tracks, decision.new_dets, decision.recond, det, hidden, t);
    remove_objects(decision, t);
    clock.lap(POSTPROCESS);
    finish_frame(result, t);
    ++t_;
    result.timings_ms = ms;
    return result;
}

Detections Stream::detect() {
    Detections det;
    const PromptSet& ps = prompts_;
    const TextInput text{static_cast<int64_t>(ps.prompts.size()), ps.T, ps.C, ps.features.data(), ps.mask.data()};
    std::vector<float> masks;
    session_->detect(text, [&](const DetectorView& v) {
        if (v.m != m_ || v.P != text.P) throw InternalError("detector returned " + std::to_string(v.P) + " x " + std::to_string(v.m) + " px masks");
        const int64_t Q = v.Q, px = v.m * v.m;
        std::vector<float> pr(static_cast<size_t>(Q));
        for (int64_t p = 0; p < v.P; ++p) {
            const float presence = sigmoid(v.presence_logits[p]);
            for (int64_t q = 0; q < Q; ++q) pr[q] = sigmoid(v.pred_logits[p * Q + q]) * presence;
            select_detections(pr, v.pred_masks + p * Q * px, Q, px, p, policy_, masks, det);
        }
    });
    det.masks.n = static_cast<int64_t>(det.scores.size());
    det.masks.h = det.masks.w = m_;
    det.masks.v = std::move(masks);
    return det;
}

Stream::Step Stream::propagate(const std::vector<ObjectTrack*>& tracks, int64_t t) {
    Step st;
    st.low = Planes(0, m_, m_);
    if (tracks.empty()) {
        st.masks = st.low;
        return st;
    }
    const StepFeeds feeds = gather(tracks, t, s_.num_maskmem, s_.max_object_pointers_in_encoder, hw_, mem_, c_, memory_selection_);
    TrackerStepOutputs out;
    session_->tracker_step(feeds, out);
    const int64_t N = static_cast<int64_t>(tracks.size());
    st.low = Planes(N, m_, m_);
    st.low.v = std::move(out.low_res_masks);
    for (int64_t i = 0; i < N; ++i) {
        MemoryEntry e;
        e.pointer.assign(out.object_pointer.begin() + i * c_, out.object_pointer.begin() + (i + 1) * c_);
        tracks[i]->recent[t] = std::move(e);
        tracks[i]->scores[t] = memory_score(out.object_score_logits[size_t(i)], out.iou_scores.data() + i * 3, 3);
    }
    st.score = std::move(out.object_score_logits);
    st.masks = st.low;
    if (options_.fill_holes) fill_holes(st.masks, s_.fill_hole_area);
    return st;
}

std::vector<std::vector<uint16_t>> Stream::encode(const Planes& masks, const std::vector<uint8_t>& binarize, const std::vector<float>& scores) {
    const Planes resized = resize_planes(masks, mem_size_, mem_size_, true);
    std::vector<float> feats;
    session_->memory_encoder(resized.v.data(), binarize.data(), scores.data(), masks.n, feats);
    std::vector<std::vector<uint16_t>> bits(size_t(masks.n));
    const int64_t entry = hw_ * mem_;
    for (int64_t i = 0; i < masks.n; ++i) {
        bits[i].resize(size_t(entry));
        for (int64_t k = 0; k < entry; ++k) bits[i][k] = to_bfloat16(feats[size_t(i * entry + k)]);
    }
    return bits;
}

void Stream::encode_track_memories(const std::vector<ObjectTrack*>& tracks, const MergeDecision& decision, int64_t t) {
    const int64_t n = static_cast<int64_t>(tracks.size());
    const auto bits = encode(decision.memory_masks, std::vector<uint8_t>(size_t(n), 0), decision.memory_scores);
    for (int64_t i = 0; i < n; ++i) {
        MemoryEntry* e = tracks[i]->entry(t);
        if (e == nullptr) throw InternalError("track without an entry for this frame");
        e->maskmem = bits[i];
    }
}

std::vector<ObjectTrack*> Stream::add_objects(const std::vector<ObjectTrack*>& tracks, const Step& step, const MergeDecision& decision,
                                              const Detections& det, int64_t t, int64_t video_h, int64_t video_w) {
    const std::vector<int64_t>& new_dets = decision.new_dets;
    if (new_dets.empty()) return {};
    const int64_t n = static_cast<int64_t>(new_dets.size()), px = m_ * m_;
    const Planes logits = take_rows(det.masks, new_dets);
    Planes binary(n, m_, m_);
    for (int64_t p = 0; p < n * px; ++p) binary.v[size_t(p)] = logits.v[size_t(p)] >= 0.5f ? 1.0f : 0.0f;
    TrackerInitOutputs init;
    // "meta": the graph thresholds the logits itself, after resizing them (as Meta does)
    session_->tracker_init(meta_semantics_ ? logits.v.data() : binary.v.data(), n, init);
    std::vector<std::unique_ptr<ObjectTrack>> created;
    for (int64_t k = 0; k < n; ++k) {
        auto tr = std::make_unique<ObjectTrack>();
        tr->obj_id = decision.new_obj_ids[size_t(k)];
        tr->prompt_id = det.prompt_ids[new_dets[k]];
        tr->det_score = det.scores[new_dets[k]];
        tr->first_frame = t;
        tr->keep_alive = s_.init_trk_keep_alive;
        MemoryEntry e;
        e.pointer.assign(init.object_pointer.begin() + k * c_, init.object_pointer.begin() + (k + 1) * c_);
        tr->cond[t] = std::move(e);
        created.push_back(std::move(tr));
    }
    next_id_ = decision.new_obj_ids.back() + 1;
    const std::vector<int64_t>& rerun = decision.rerun;
    Planes hr_existing = rerun.empty() ? Planes(0, image_, image_) : resize_planes(take_rows(step.low, rerun), image_, image_, false);
    std::vector<float> scores;
    for (int64_t i : rerun) scores.push_back(step.score[i]);
    std::vector<std::vector<uint16_t>> new_bits;
    Planes hr = hr_existing;
    if (meta_semantics_) {  // Meta's first memory, not binarised again by the encoder
        std::vector<float> new_scores;
        const Planes mem_in = meta_new_object_memory(logits, video_h, video_w, image_, mem_size_, new_scores);
        new_bits = encode(mem_in, std::vector<uint8_t>(size_t(n), 0), new_scores);
    } else {
        Planes hr_new = resize_planes(binary, image_, image_, true);
        for (float& v : hr_new.v) v = v * 20.0f - 10.0f;
        hr = concat(hr_existing, hr_new);
        scores.insert(scores.end(), init.object_score_logits.begin(), init.object_score_logits.end());
    }
    auto bits = hr.n ? encode(hr, std::vector<uint8_t>(size_t(hr.n), 1), scores) : std::vector<std::vector<uint16_t>>{};
    if (meta_semantics_) bits.insert(bits.end(), new_bits.begin(), new_bits.end());
    for (size_t k = 0; k < rerun.size(); ++k) {
        MemoryEntry* e = tracks[rerun[k]]->entry(t);
        if (e == nullptr) throw InternalError("track without an entry for this frame");
        e->maskmem = bits[k];
    }
    std::vector<ObjectTrack*> out;
    for (size_t k = 0; k < created.size(); ++k) {
        created[k]->cond[t].maskmem = bits[rerun.size() + k];
        out.push_back(created[k].get());
        tracks_.push_back(std::move(created[k]));
    }
    return out;
}

FrameObjects Stream::outputs(int64_t h, int64_t w, const std::vector<ObjectTrack*>& tracks, const Step& step, const Planes& trk_masks,
                             const std::vector<ObjectTrack*>& new_tracks, const std::vector<int64_t>& new_dets, const Recond& recond,
                             const Detections& det, const std::vector<int64_t>& hidden, int64_t t) {
    FrameObjects r;
    r.frame_index = t;
    r.height = h;
    r.width = w;
    r.label_map.assign(size_t(h * w), 0);
    const int64_t px = m_ * m_;
    const int64_t total = static_cast<int64_t>(tracks.size() + new_tracks.size());
    if (total == 0) return r;
    Planes low(total, m_, m_);
    for (size_t i = 0; i < tracks.size(); ++i) {
        auto rc = recond.find(tracks[i]->obj_id);
        const float* src = rc != recond.end() ? det.masks.at(rc->second) : trk_masks.at(int64_t(i));
        std::copy(src, src + px, low.at(int64_t(i)));
    }
    if (!new_tracks.empty()) {  // new objects are shown as their (hole-filled) detection masks
        Planes new_low = take_rows(det.masks, new_dets);
        if (options_.fill_holes) fill_holes(new_low, s_.fill_hole_area);
        std::copy(new_low.v.begin(), new_low.v.end(), low.at(int64_t(tracks.size())));
    }
    std::vector<int64_t> ids, prompt_ids;
    std::vector<float> scores, tscores;
    for (size_t i = 0; i < tracks.size(); ++i) {
        ids.push_back(tracks[i]->obj_id);
        prompt_ids.push_back(tracks[i]->prompt_id);
        scores.push_back(tracks[i]->det_score);
        tscores.push_back(sigmoid(step.score[i]));
    }
    for (ObjectTrack* tr : new_tracks) {
        ids.push_back(tr->obj_id);
        prompt_ids.push_back(tr->prompt_id);
        scores.push_back(tr->det_score);
        tscores.push_back(tr->det_score);
    }
    const Planes logits = resize_planes(low, h, w, false);
    const int64_t hw = h * w;
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < total; ++i) {
        if (std::find(hidden.begin(), hidden.end(), ids[i]) != hidden.end()) continue;
        if (any_positive(logits.at(i), hw)) keep.push_back(i);
    }
    const int64_t n = static_cast<int64_t>(keep.size());
    r.masks.assign(size_t(n * hw), 0);
    for (int64_t k = 0; k < n; ++k) {
        const int64_t i = keep[k];
        r.object_ids.push_back(ids[i]);
        r.prompt_ids.push_back(prompt_ids[i]);
        r.scores.push_back(scores[i]);
        r.tracker_scores.push_back(tscores[i]);
        const float* v = logits.at(i);
        uint8_t* mk = &r.masks[size_t(k * hw)];
        for (int64_t p = 0; p < hw; ++p) mk[p] = v[p] > 0.0f;
    }
    object_wise_non_overlap(r.masks, hw, r.tracker_scores, r.prompt_ids);
    r.boxes.assign(size_t(n * 4), 0.0f);
    r.areas.assign(size_t(n), 0);
    for (int64_t k = 0; k < n; ++k) {
        const uint8_t* mk = &r.masks[size_t(k * hw)];
        box_from_mask(mk, h, w, &r.boxes[size_t(k * 4)]);
        r.areas[k] = std::count(mk, mk + hw, uint8_t(1));
    }
    // label map: the prompt of the object with the highest mask probability at each pixel
    // (argmax of where(masks, sigmoid(logits), -1); the probabilities matter only where masks overlap)
    for (int64_t p = 0; p < hw; ++p) {
        int64_t best = -1, claims = 0;
        for (int64_t k = 0; k < n; ++k) {
            if (r.masks[size_t(k * hw + p)]) {
                if (best < 0) best = k;
                ++claims;
            }
        }
        if (claims > 1) {
            float best_conf = sigmoid(logits.at(keep[best])[p]);
            for (int64_t k = best + 1; k < n; ++k) {
                if (!r.masks[size_t(k * hw + p)]) continue;
                const float conf = sigmoid(logits.at(keep[k])[p]);
                if (conf > best_conf) {  // ties: the first object
                    best_conf = conf;
                    best = k;
                }
            }
        }
        if (best >= 0) r.label_map[size_t(p)] = static_cast<uint8_t>(r.prompt_ids[size_t(best)] + 1);
    }
    return r;
}

void Stream::remove_objects(const MergeDecision& decision, int64_t t) {
    // Meta's execution phase: objects the hot-start rules removed and stale tracks given up at the
    // cap leave after this frame's outputs; the hot-start state keeps tracked objects only
    auto gone = [&](int64_t id) {
        return std::find(decision.removed.begin(), decision.removed.end(), id) != decision.removed.end() ||
               std::find(decision.evicted.begin(), decision.evicted.end(), id) != decision.evicted.end();
    };
    tracks_.erase(std::remove_if(tracks_.begin(), tracks_.end(), [&](const std::unique_ptr<ObjectTrack>& tr) { return gone(tr->obj_id); }),
                  tracks_.end());
    if (!decision.has_hotstart) return;
    hotstart_ = decision.hotstart;
    std::vector<int64_t> alive;
    for (const auto& tr : tracks_) alive.push_back(tr->obj_id);
    prune(hotstart_, alive, t, policy_);
}

void Stream::finish_frame(const FrameObjects& result, int64_t t) {
    std::vector<int64_t> ids, counts;
    for (const auto& tr : tracks_) {
        ids.push_back(tr->obj_id);
        counts.push_back(tr->empty_frames);
    }
    const std::vector<uint8_t> removed = forget(ids, counts, result.object_ids, policy_.forget_after);
    size_t i = 0;
    for (auto it = tracks_.begin(); it != tracks_.end(); ++i) {
        ObjectTrack& tr = **it;
        tr.empty_frames = counts[i];
        if (removed[i]) {
            it = tracks_.erase(it);
            continue;
        }
        ++it;
    }
    std::vector<ObjectTrack*> alive;
    for (const auto& tr : tracks_) alive.push_back(tr.get());
    const bool selecting = memory_selection_ >= 0.0;
    const auto valid = selecting ? valid_frames(alive, t, memory_selection_) : std::map<int64_t, std::vector<int64_t>>{};
    const std::vector<int64_t> none;
    for (ObjectTrack* tr : alive) {
        auto g = valid.find(tr->first_frame);
        tr->prune(t, s_.num_maskmem, s_.max_object_pointers_in_encoder, max_cond_, selecting ? (g != valid.end() ? &g->second : &none) : nullptr);
    }
}

TrackTable Stream::track_table(const std::vector<ObjectTrack*>& tracks) {
    TrackTable table;
    for (const ObjectTrack* tr : tracks) {
        table.obj_ids.push_back(tr->obj_id);
        table.prompt_ids.push_back(tr->prompt_id);
        table.last_occluded.push_back(tr->last_occluded);
        table.keep_alive.push_back(tr->keep_alive);
        table.first_frame.push_back(tr->first_frame);
    }
    return table;
}

}  // namespace m3rt
