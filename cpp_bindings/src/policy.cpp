#include "policy.h"

#include <algorithm>
#include <numeric>
#include <set>

namespace m3rt {
namespace {

std::vector<uint8_t> positive(const float* v, int64_t n) {
    std::vector<uint8_t> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out[i] = v[i] > 0.0f;
    return out;
}

bool any_positive(const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        if (v[i] > 0.0f) return true;
    }
    return false;
}

}  // namespace

PolicyConfig policy_config(const TrackerSettings& s, int64_t max_objects, int64_t forget_after, bool nms) {
    PolicyConfig c;
    c.score_threshold_detection = s.score_threshold_detection;
    c.det_nms_thresh = s.det_nms_thresh;
    c.assoc_iou_thresh = s.assoc_iou_thresh;
    c.trk_assoc_iou_thresh = s.trk_assoc_iou_thresh;
    c.new_det_thresh = s.new_det_thresh;
    c.high_conf_thresh = s.high_conf_thresh;
    c.high_iou_thresh = s.high_iou_thresh;
    c.recondition_every_nth_frame = s.recondition_every_nth_frame;
    c.recondition_on_trk_masks = s.recondition_on_trk_masks;
    c.suppress_overlapping_based_on_recent_occlusion_threshold = s.suppress_overlapping_based_on_recent_occlusion_threshold;
    c.init_trk_keep_alive = s.init_trk_keep_alive;
    c.max_trk_keep_alive = s.max_trk_keep_alive;
    c.min_trk_keep_alive = s.min_trk_keep_alive;
    c.max_objects = max_objects;
    c.forget_after = forget_after;
    c.nms = nms;
    return c;
}

void select_detections(std::vector<float>& pr, const float* logits, int64_t Q, int64_t px, int64_t prompt, const PolicyConfig& cfg,
                       std::vector<float>& masks, Detections& out) {
    if (cfg.nms && cfg.det_nms_thresh > 0) {
        const std::vector<uint8_t> keep = nms_masks(pr.data(), logits, Q, px, cfg.score_threshold_detection, cfg.det_nms_thresh);
        for (int64_t q = 0; q < Q; ++q) {
            if (!keep[q]) pr[q] = 0.0f;
        }
    }
    const float thr = static_cast<float>(cfg.score_threshold_detection);
    for (int64_t q = 0; q < Q; ++q) {
        if (!(pr[q] > thr)) continue;
        masks.insert(masks.end(), logits + q * px, logits + (q + 1) * px);
        out.scores.push_back(pr[q]);
        out.prompt_ids.push_back(prompt);
    }
}

Association associate(const Detections& det, const Planes& trk_masks, const TrackTable& tracks, const PolicyConfig& cfg) {
    Association a;
    const int64_t n_det = static_cast<int64_t>(det.scores.size()), n_trk = static_cast<int64_t>(tracks.size()), px = trk_masks.plane();
    if (n_trk == 0) {
        for (int64_t d = 0; d < n_det; ++d) a.new_dets.push_back(d);
        return a;
    }
    std::vector<std::vector<uint8_t>> trk_bin;
    std::vector<bool> nonempty;
    for (int64_t j = 0; j < n_trk; ++j) {
        trk_bin.push_back(positive(trk_masks.at(j), px));
        nonempty.push_back(std::find(trk_bin.back().begin(), trk_bin.back().end(), 1) != trk_bin.back().end());
    }
    if (n_det == 0) {
        for (int64_t j = 0; j < n_trk; ++j) {
            if (nonempty[j]) a.unmatched.push_back(tracks.obj_ids[j]);
        }
        return a;
    }
    std::vector<float> ious(static_cast<size_t>(n_det * n_trk));
    for (int64_t d = 0; d < n_det; ++d) {
        const std::vector<uint8_t> db = positive(det.masks.at(d), px);
        for (int64_t j = 0; j < n_trk; ++j) {
            ious[d * n_trk + j] = det.prompt_ids[d] == tracks.prompt_ids[j] ? mask_iou(db.data(), trk_bin[j].data(), px) : 0.0f;
        }
    }
    const float trk_assoc = static_cast<float>(cfg.trk_assoc_iou_thresh), assoc = static_cast<float>(cfg.assoc_iou_thresh);
    const float new_det = static_cast<float>(cfg.new_det_thresh), high_conf = static_cast<float>(cfg.high_conf_thresh);
    const float high_iou = static_cast<float>(cfg.high_iou_thresh);
    for (int64_t j = 0; j < n_trk; ++j) {
        bool trk_matched = false, matched = false;
        for (int64_t d = 0; d < n_det; ++d) {
            trk_matched = trk_matched || ious[d * n_trk + j] >= trk_assoc;
            matched = matched || ious[d * n_trk + j] >= assoc;
        }
        if (nonempty[j] && !trk_matched) a.unmatched.push_back(tracks.obj_ids[j]);
        if (matched) a.matched.push_back(tracks.obj_ids[j]);
    }
    for (int64_t d = 0; d < n_det; ++d) {
        const float* row = &ious[d * n_trk];
        bool any_assoc = false;
        int64_t best = 0;
        for (int64_t j = 0; j < n_trk; ++j) {
            any_assoc = any_assoc || row[j] >= assoc;
            if (row[j] > row[best]) best = j;  // np.argmax / max: the first maximum
        }
        const bool is_new = det.scores[d] >= new_det && !any_assoc;
        if (is_new) a.new_dets.push_back(d);
        if (det.scores[d] >= high_conf && !is_new && row[best] >= high_iou) a.high_conf[tracks.obj_ids[best]] = d;
    }
    return a;
}

std::vector<int64_t> cap_new_objects(const std::vector<int64_t>& new_dets, const std::vector<float>& det_scores, int64_t num_tracks,
                                     int64_t max_objects) {
    if (num_tracks + static_cast<int64_t>(new_dets.size()) <= max_objects) return new_dets;
    const int64_t room = std::max<int64_t>(max_objects - num_tracks, 0);
    std::vector<size_t> order(new_dets.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return -det_scores[new_dets[a]] < -det_scores[new_dets[b]]; });
    std::vector<int64_t> kept;
    for (size_t i = 0; i < order.size() && static_cast<int64_t>(i) < room; ++i) kept.push_back(new_dets[order[i]]);
    return kept;
}

std::vector<int64_t> update_keep_alive(const TrackTable& tracks, const Association& a, const PolicyConfig& cfg) {
    std::vector<int64_t> out = tracks.keep_alive;
    for (size_t i = 0; i < tracks.size(); ++i) {
        const int64_t id = tracks.obj_ids[i];
        if (std::find(a.matched.begin(), a.matched.end(), id) != a.matched.end()) out[i] = std::min(cfg.max_trk_keep_alive, out[i] + 1);
        if (std::find(a.unmatched.begin(), a.unmatched.end(), id) != a.unmatched.end()) out[i] = std::max(cfg.min_trk_keep_alive, out[i] - 1);
    }
    return out;
}

Recond reconditioning(const Association& a, const TrackTable& tracks, const std::vector<float>& trk_score_logits, int64_t t,
                      const PolicyConfig& cfg) {
    Recond recond;
    if (cfg.recondition_every_nth_frame <= 0 || t % cfg.recondition_every_nth_frame != 0) return recond;
    for (const auto& [obj_id, d] : a.high_conf) {
        size_t i = 0;
        while (tracks.obj_ids[i] != obj_id) ++i;
        // transformers compares the tracker's *logit* with high_conf_thresh; kept as is
        if (trk_score_logits[i] > static_cast<float>(cfg.high_conf_thresh)) recond[obj_id] = d;
    }
    return recond;
}

Planes suppress_recently_occluded(const Planes& trk_masks, const std::vector<int64_t>& prompt_ids, const std::vector<int64_t>& last_in,
                                  int64_t t, double thr, std::vector<int64_t>& last_occluded) {
    const int64_t n = trk_masks.n, px = trk_masks.plane();
    std::vector<std::vector<uint8_t>> binary;
    for (int64_t i = 0; i < n; ++i) binary.push_back(positive(trk_masks.at(i), px));
    std::vector<bool> suppress(static_cast<size_t>(n), false);
    if (thr > 0) {
        const std::set<int64_t> prompts(prompt_ids.begin(), prompt_ids.end());
        for (int64_t p : prompts) {
            std::vector<int64_t> idx;
            for (int64_t i = 0; i < n; ++i) {
                if (prompt_ids[i] == p) idx.push_back(i);
            }
            if (idx.size() <= 1) continue;
            const size_t k = idx.size();
            std::vector<bool> sup_i(k, false), sup_j(k, false);
            for (size_t a = 0; a < k; ++a) {
                for (size_t b = a + 1; b < k; ++b) {  // np.triu(..., k=1)
                    if (!(mask_iou(binary[idx[a]].data(), binary[idx[b]].data(), px) >= static_cast<float>(thr))) continue;
                    const int64_t la = last_in[idx[a]], lb = last_in[idx[b]];
                    if (la > lb && lb > -1) sup_i[a] = true;
                    if (lb > la && la > -1) sup_j[b] = true;
                }
            }
            for (size_t a = 0; a < k; ++a) suppress[idx[a]] = sup_i[a] || sup_j[a];
        }
    }
    Planes out = trk_masks;
    last_occluded = last_in;
    for (int64_t i = 0; i < n; ++i) {
        const bool empty = std::find(binary[i].begin(), binary[i].end(), 1) == binary[i].end();
        if (empty || suppress[i]) last_occluded[i] = t;
        if (suppress[i]) std::fill(out.at(i), out.at(i) + px, NO_OBJ_LOGIT);
    }
    return out;
}

void memory_inputs(const Planes& shown, const TrackTable& tracks, const Recond& recond, const Detections& det, const PolicyConfig& cfg,
                   Planes& mem_in, std::vector<float>& scores) {
    mem_in = shown;
    const int64_t n = shown.n, px = shown.plane();
    if (!cfg.recondition_on_trk_masks) {
        for (int64_t i = 0; i < n; ++i) {
            auto r = recond.find(tracks.obj_ids[i]);
            if (r == recond.end()) continue;
            const float* d = det.masks.at(r->second);
            float* dst = mem_in.at(i);
            for (int64_t p = 0; p < px; ++p) dst[p] = d[p] >= 0.5f ? 1.0f : 0.0f;
        }
    }
    suppress_shrunk(mem_in, tracks.prompt_ids);
    scores.assign(static_cast<size_t>(n), 0.0f);
    for (int64_t i = 0; i < n; ++i) scores[i] = any_positive(mem_in.at(i), px) ? 10.0f : -10.0f;
}

std::vector<int64_t> rerun_rows(const TrackTable& tracks, const Recond& recond, size_t num_new) {
    std::vector<int64_t> rows;
    if (num_new == 0) return rows;
    for (size_t i = 0; i < tracks.size(); ++i) {
        if (!recond.count(tracks.obj_ids[i])) rows.push_back(int64_t(i));
    }
    return rows;
}

MergeDecision merge(const Detections& det, const TrackTable& tracks, const Planes& trk_masks, const std::vector<float>& trk_score_logits,
                    int64_t t, int64_t next_id, const PolicyConfig& cfg) {
    MergeDecision d;
    d.association = associate(det, trk_masks, tracks, cfg);
    d.new_dets = cap_new_objects(d.association.new_dets, det.scores, static_cast<int64_t>(tracks.size()), cfg.max_objects);
    for (size_t k = 0; k < d.new_dets.size(); ++k) d.new_obj_ids.push_back(next_id + int64_t(k));
    d.keep_alive = update_keep_alive(tracks, d.association, cfg);
    d.recond = reconditioning(d.association, tracks, trk_score_logits, t, cfg);
    d.shown = suppress_recently_occluded(trk_masks, tracks.prompt_ids, tracks.last_occluded, t,
                                         cfg.suppress_overlapping_based_on_recent_occlusion_threshold, d.last_occluded);
    memory_inputs(d.shown, tracks, d.recond, det, cfg, d.memory_masks, d.memory_scores);
    d.rerun = rerun_rows(tracks, d.recond, d.new_dets.size());
    return d;
}

std::vector<uint8_t> forget(const std::vector<int64_t>& obj_ids, std::vector<int64_t>& empty_frames, const std::vector<int64_t>& shown,
                            int64_t forget_after) {
    std::vector<uint8_t> removed(obj_ids.size(), 0);
    for (size_t i = 0; i < obj_ids.size(); ++i) {
        const bool seen = std::find(shown.begin(), shown.end(), obj_ids[i]) != shown.end();
        empty_frames[i] = seen ? 0 : empty_frames[i] + 1;
        removed[i] = forget_after > 0 && empty_frames[i] >= forget_after;
    }
    return removed;
}

}  // namespace m3rt
