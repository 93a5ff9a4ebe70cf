#include "policy.h"

#include <algorithm>
#include <iterator>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>

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

PolicyConfig policy_config(const TrackerSettings& s, int64_t max_objects, int64_t forget_after, bool nms, PolicyMode mode) {
    PolicyConfig c;
    c.mode = mode;
    c.hotstart_delay = s.hotstart_delay;
    c.hotstart_unmatch_thresh = s.hotstart_unmatch_thresh;
    c.hotstart_dup_thresh = s.hotstart_dup_thresh;
    c.suppress_unmatched_only_within_hotstart = s.suppress_unmatched_only_within_hotstart;
    c.decrease_trk_keep_alive_for_empty_masklets = s.decrease_trk_keep_alive_for_empty_masklets;
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
    for (int64_t j = 0; j < n_trk; ++j) {
        if (!nonempty[j]) a.empty.push_back(tracks.obj_ids[j]);
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
        std::vector<int64_t> hits;
        for (int64_t j = 0; j < n_trk; ++j) {
            if (row[j] >= assoc) hits.push_back(tracks.obj_ids[j]);
        }
        a.det_to_matched.push_back(std::move(hits));
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

HotstartStep hotstart_step(const HotstartState& state, int64_t t, const std::vector<std::vector<int64_t>>& det_to_matched,
                           const std::vector<int64_t>& new_obj_ids, const std::vector<int64_t>& empty_obj_ids,
                           const std::vector<int64_t>& unmatched_obj_ids, const PolicyConfig& cfg) {
    HotstartStep step;
    step.state = state;
    HotstartState& s = step.state;
    std::set<int64_t>& newly = step.removed;
    const int64_t diff = t - cfg.hotstart_delay;
    for (int64_t o : new_obj_ids) {
        s.first_frame.emplace(o, t);
        if (s.keep_alive.count(o)) throw std::logic_error("object " + std::to_string(o) + " is created twice");
        s.keep_alive[o] = cfg.init_trk_keep_alive;
    }
    std::set<int64_t> matched;
    for (const auto& objs : det_to_matched) matched.insert(objs.begin(), objs.end());
    for (int64_t o : matched) s.keep_alive[o] = std::min(cfg.max_trk_keep_alive, s.keep_alive.at(o) + 1);
    for (int64_t o : unmatched_obj_ids) {
        s.unmatched_frames[o].push_back(t);
        s.keep_alive[o] = std::max(cfg.min_trk_keep_alive, s.keep_alive.at(o) - 1);
    }
    if (cfg.decrease_trk_keep_alive_for_empty_masklets) {
        for (int64_t o : empty_obj_ids) s.keep_alive[o] = std::max(cfg.min_trk_keep_alive, s.keep_alive.at(o) - 1);
    }
    for (const auto& [o, frames] : s.unmatched_frames) {
        if (s.removed.count(o) || newly.count(o)) continue;
        if (static_cast<int64_t>(frames.size()) >= cfg.hotstart_unmatch_thresh && s.first_frame.at(o) > diff) {
            newly.insert(o);
        } else if (s.keep_alive.at(o) <= 0 && !cfg.suppress_unmatched_only_within_hotstart) {
            step.suppressed.insert(o);
        }
    }
    for (const auto& objs : det_to_matched) {
        if (objs.size() < 2) continue;
        int64_t first = objs[0];  // the oldest; ties: the first listed, as Meta's min()
        for (int64_t o : objs) {
            if (s.first_frame.at(o) < s.first_frame.at(first)) first = o;
        }
        for (int64_t o : objs) {
            if (o != first) s.overlap_frames[{first, o}].push_back(t);
        }
    }
    for (const auto& [pair, frames] : s.overlap_frames) {
        const int64_t o = pair.second;
        if (s.removed.count(o) || newly.count(o)) continue;
        if (s.first_frame.at(o) > diff && static_cast<int64_t>(frames.size()) >= cfg.hotstart_dup_thresh) newly.insert(o);
    }
    s.removed.insert(newly.begin(), newly.end());
    return step;
}

void prune(HotstartState& state, const std::vector<int64_t>& alive, int64_t t, const PolicyConfig& cfg) {
    const std::set<int64_t> live(alive.begin(), alive.end());
    const int64_t horizon = t - cfg.hotstart_delay;
    for (auto it = state.first_frame.begin(); it != state.first_frame.end();) it = live.count(it->first) ? std::next(it) : state.first_frame.erase(it);
    for (auto it = state.keep_alive.begin(); it != state.keep_alive.end();) it = live.count(it->first) ? std::next(it) : state.keep_alive.erase(it);
    for (auto it = state.unmatched_frames.begin(); it != state.unmatched_frames.end();) {
        if (!live.count(it->first)) {
            it = state.unmatched_frames.erase(it);
            continue;
        }
        std::vector<int64_t>& f = it->second;
        if (state.first_frame.at(it->first) <= horizon && f.size() > 1) f.erase(f.begin(), f.end() - 1);  // only the last one
        ++it;
    }
    for (auto it = state.overlap_frames.begin(); it != state.overlap_frames.end();) {
        const auto [a, b] = it->first;
        const bool keep = live.count(a) && live.count(b) && state.first_frame.at(b) > horizon;
        it = keep ? std::next(it) : state.overlap_frames.erase(it);
    }
    state.removed.clear();
}

std::vector<int64_t> stale_tracks(const TrackTable& tracks, const Association& a, const std::vector<int64_t>& keep_alive, int64_t count) {
    std::vector<int64_t> out;
    if (count <= 0 || tracks.size() == 0) return out;
    auto has = [](const std::vector<int64_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); };
    std::vector<size_t> rows;
    for (size_t i = 0; i < tracks.size(); ++i) {
        const int64_t id = tracks.obj_ids[i];
        if ((has(a.empty, id) || keep_alive[i] <= 0) && !has(a.matched, id)) rows.push_back(i);
    }
    // np.lexsort((ids, keep_alive, ~empty)): empty first, then lowest keep-alive, then lowest id
    std::stable_sort(rows.begin(), rows.end(), [&](size_t x, size_t y) {
        const bool ex = has(a.empty, tracks.obj_ids[x]), ey = has(a.empty, tracks.obj_ids[y]);
        if (ex != ey) return ex;
        if (keep_alive[x] != keep_alive[y]) return keep_alive[x] < keep_alive[y];
        return tracks.obj_ids[x] < tracks.obj_ids[y];
    });
    for (size_t k = 0; k < rows.size() && static_cast<int64_t>(k) < count; ++k) out.push_back(tracks.obj_ids[rows[k]]);
    return out;
}

MergeDecision merge(const Detections& det, const TrackTable& tracks, const Planes& trk_masks, const std::vector<float>& trk_score_logits,
                    int64_t t, int64_t next_id, const PolicyConfig& cfg, const HotstartState* hotstart) {
    MergeDecision d;
    const bool meta = cfg.mode == PolicyMode::meta;
    d.association = associate(det, trk_masks, tracks, cfg);
    d.keep_alive = update_keep_alive(tracks, d.association, cfg);
    const int64_t n_trk = static_cast<int64_t>(tracks.size());
    if (meta) {
        // a new object never displaces more than the cap
        const std::vector<int64_t> wanted = cap_new_objects(d.association.new_dets, det.scores, 0, cfg.max_objects);
        const int64_t overflow = n_trk + static_cast<int64_t>(wanted.size()) - cfg.max_objects;
        std::vector<int64_t> evicted = stale_tracks(tracks, d.association, d.keep_alive, overflow);
        d.new_dets = cap_new_objects(wanted, det.scores, n_trk - static_cast<int64_t>(evicted.size()), cfg.max_objects);
        for (size_t k = 0; k < d.new_dets.size(); ++k) d.new_obj_ids.push_back(next_id + int64_t(k));
        HotstartStep step = hotstart_step(hotstart ? *hotstart : HotstartState{}, t, d.association.det_to_matched, d.new_obj_ids,
                                          d.association.empty, d.association.unmatched, cfg);
        d.removed.assign(step.removed.begin(), step.removed.end());
        std::sort(evicted.begin(), evicted.end());  // np.setdiff1d: sorted, unique
        evicted.erase(std::unique(evicted.begin(), evicted.end()), evicted.end());
        for (int64_t o : evicted) {
            if (!step.removed.count(o)) d.evicted.push_back(o);
        }
        for (int64_t o : step.suppressed) {
            if (!step.removed.count(o)) d.hidden.push_back(o);
        }
        d.has_hotstart = true;
        d.hotstart = std::move(step.state);
    } else {
        d.new_dets = cap_new_objects(d.association.new_dets, det.scores, n_trk, cfg.max_objects);
        for (size_t k = 0; k < d.new_dets.size(); ++k) d.new_obj_ids.push_back(next_id + int64_t(k));
    }
    d.recond = reconditioning(d.association, tracks, trk_score_logits, t, cfg);
    std::vector<int64_t> last_before = tracks.last_occluded;
    if (meta && !d.removed.empty() && tracks.first_frame.size() == tracks.size()) {
        for (size_t i = 0; i < tracks.size(); ++i) {  // Meta keeps no last-occluded entry for these yet
            const bool first_tracked = tracks.first_frame[i] == t - 1;
            if (first_tracked && std::binary_search(d.removed.begin(), d.removed.end(), tracks.obj_ids[i])) last_before[i] = ALWAYS_OCCLUDED;
        }
    }
    d.shown = suppress_recently_occluded(trk_masks, tracks.prompt_ids, last_before, t, cfg.suppress_overlapping_based_on_recent_occlusion_threshold,
                                         d.last_occluded);
    memory_inputs(d.shown, tracks, d.recond, det, cfg, d.memory_masks, d.memory_scores);
    if (!meta) d.rerun = rerun_rows(tracks, d.recond, d.new_dets.size());
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
