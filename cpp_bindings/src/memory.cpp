#include "memory.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <utility>

#include "masks.h"

namespace m3rt {

MemoryEntry* ObjectTrack::entry(int64_t frame) {
    auto c = cond.find(frame);
    if (c != cond.end()) return &c->second;
    auto r = recent.find(frame);
    return r != recent.end() ? &r->second : nullptr;
}

void ObjectTrack::promote(int64_t frame) {
    auto r = recent.find(frame);
    if (r == recent.end()) return;
    cond[frame] = std::move(r->second);
    recent.erase(r);
    scores.erase(frame);
}

void ObjectTrack::prune(int64_t frame, int64_t num_maskmem, int64_t max_pointers, int64_t max_cond, const std::vector<int64_t>* valid) {
    std::set<int64_t> keep, spatial;
    if (valid == nullptr) {
        for (const auto& [t, e] : recent) {
            if (t > frame - (max_pointers - 1)) keep.insert(t);
            if (t > frame - (max_pointers - 1) && t > frame - (num_maskmem - 1)) spatial.insert(t);
        }
        for (auto it = scores.begin(); it != scores.end();) it = keep.count(it->first) ? std::next(it) : scores.erase(it);
    } else {
        std::set<int64_t> ordered_set;
        for (int64_t t : *valid) {
            if (t < frame && scores.count(t)) ordered_set.insert(t);
        }
        if (scores.count(frame)) ordered_set.insert(frame);
        const std::vector<int64_t> ordered(ordered_set.begin(), ordered_set.end());
        const int64_t n = static_cast<int64_t>(ordered.size());
        auto last = [&](int64_t k) { return std::set<int64_t>(ordered.begin() + std::max<int64_t>(0, n - std::max<int64_t>(k, 0)), ordered.end()); };
        keep = last(max_pointers - 1);
        spatial = last(num_maskmem - 1);
        const std::set<int64_t> counted = last(max_pointers);
        for (auto it = scores.begin(); it != scores.end();) it = counted.count(it->first) ? std::next(it) : scores.erase(it);
    }
    for (auto it = recent.begin(); it != recent.end();) it = keep.count(it->first) ? std::next(it) : recent.erase(it);
    for (auto& [t, e] : recent) {
        if (!spatial.count(t)) e.maskmem = std::vector<uint16_t>();
    }
    // sorted(cond)[:-max_cond]: all but the newest max_cond
    while (static_cast<int64_t>(cond.size()) > max_cond) cond.erase(cond.begin());
}

std::pair<float, float> memory_score(float object_score_logit, const float* iou_scores, int64_t n) {
    const float norm = object_score_logit > 0.0f ? 2.0f / (1.0f + std::exp(-object_score_logit)) - 1.0f : 0.0f;
    float best = iou_scores[0];
    for (int64_t i = 1; i < n; ++i) best = std::max(best, iou_scores[i]);
    return {norm, best};
}

float group_score(const std::vector<std::pair<float, float>>& terms) {
    // float32 mean of the (B, B) outer product, summed in order (numpy's order up to 8 products,
    // i.e. groups of 1-2 objects; larger groups can differ from Python in the last bit)
    float sum = 0.0f;
    for (const auto& a : terms) {
        for (const auto& b : terms) sum += a.first * b.second;
    }
    return sum / static_cast<float>(terms.size() * terms.size());
}

std::map<int64_t, std::vector<int64_t>> valid_frames(const std::vector<ObjectTrack*>& tracks, int64_t frame, double threshold) {
    std::map<int64_t, std::map<int64_t, std::vector<std::pair<float, float>>>> groups;
    for (const ObjectTrack* trk : tracks) {
        auto& per_frame = groups[trk->first_frame];
        for (const auto& [t, terms] : trk->scores) {
            if (t >= 1 && t <= frame) per_frame[t].push_back(terms);
        }
    }
    std::map<int64_t, std::vector<int64_t>> out;
    for (const auto& [group, per_frame] : groups) {
        auto& v = out[group];
        for (const auto& [t, terms] : per_frame) {
            if (static_cast<double>(group_score(terms)) > threshold) v.push_back(t);
        }
    }
    return out;
}

std::vector<int64_t> select_frames(const std::vector<int64_t>& valid, int64_t frame, int64_t max_num) {
    if (frame == 0) return {};
    std::vector<int64_t> before;
    for (int64_t t : valid) {
        if (t < frame) before.push_back(t);
    }
    const int64_t k = max_num > 1 ? max_num - 1 : 0;
    std::vector<int64_t> chosen(before.end() - std::min<int64_t>(k, static_cast<int64_t>(before.size())), before.end());
    if (std::find(chosen.begin(), chosen.end(), frame - 1) == chosen.end()) chosen.push_back(frame - 1);
    return chosen;
}

int64_t ObjectTrack::nbytes() const {
    int64_t n = 0;
    for (const auto* bank : {&cond, &recent}) {
        for (const auto& [t, e] : *bank) {
            n += static_cast<int64_t>(e.pointer.size() * sizeof(float) + e.maskmem.size() * sizeof(uint16_t));
        }
    }
    return n;
}

StepFeeds gather(const std::vector<ObjectTrack*>& tracks, int64_t frame, int64_t num_maskmem, int64_t max_pointers, int64_t hw,
                 int64_t mem_dim, int64_t channels, double selection) {
    std::vector<std::vector<std::pair<int64_t, const std::vector<uint16_t>*>>> mems;
    std::vector<std::vector<std::pair<float, const std::vector<float>*>>> ptrs;
    const double norm = static_cast<double>(std::max<int64_t>(max_pointers - 1, 1));
    const bool selecting = selection >= 0.0;
    const auto valid = selecting ? valid_frames(tracks, frame - 1, selection) : std::map<int64_t, std::vector<int64_t>>{};
    for (ObjectTrack* trk : tracks) {
        std::vector<std::pair<int64_t, const std::vector<uint16_t>*>> m;
        for (const auto& [t, e] : trk->cond) {
            if (e.has_maskmem()) m.emplace_back(num_maskmem - 1, &e.maskmem);
        }
        std::vector<std::pair<float, const std::vector<float>*>> p;
        for (const auto& [t, e] : trk->cond) {
            // (frame - t) / norm in float64, stored in a float32 array
            if (t <= frame) p.emplace_back(static_cast<float>(static_cast<double>(frame - t) / norm), &e.pointer);
        }
        if (!selecting) {
            for (int64_t k = num_maskmem - 1; k > 0; --k) {
                auto it = trk->recent.find(frame - k);
                if (it != trk->recent.end() && it->second.has_maskmem()) m.emplace_back(k - 1, &it->second.maskmem);
            }
            for (int64_t d = 1; d < max_pointers; ++d) {
                auto it = trk->recent.find(frame - d);
                if (it != trk->recent.end()) p.emplace_back(static_cast<float>(static_cast<double>(d) / norm), &it->second.pointer);
            }
        } else {
            auto g = valid.find(trk->first_frame);
            const std::vector<int64_t> chosen = select_frames(g != valid.end() ? g->second : std::vector<int64_t>{}, frame, max_pointers);
            const int64_t n = static_cast<int64_t>(chosen.size());
            for (int64_t r = std::min<int64_t>(num_maskmem - 1, n); r > 0; --r) {
                auto it = trk->recent.find(chosen[size_t(n - r)]);
                if (it != trk->recent.end() && it->second.has_maskmem()) m.emplace_back(r - 1, &it->second.maskmem);
            }
            for (int64_t r = 1; r < std::min<int64_t>(n, max_pointers); ++r) {
                auto it = trk->recent.find(chosen[size_t(n - r)]);
                if (it != trk->recent.end()) p.emplace_back(static_cast<float>(static_cast<double>(r) / norm), &it->second.pointer);
            }
        }
        mems.push_back(std::move(m));
        ptrs.push_back(std::move(p));
    }
    StepFeeds f;
    f.N = static_cast<int64_t>(tracks.size());
    f.hw = hw;
    f.mem_dim = mem_dim;
    f.channels = channels;
    f.M = 1;
    f.K = 1;
    for (const auto& m : mems) f.M = std::max<int64_t>(f.M, static_cast<int64_t>(m.size()));
    for (const auto& p : ptrs) f.K = std::max<int64_t>(f.K, static_cast<int64_t>(p.size()));
    f.mem_feats.assign(size_t(f.N * f.M * hw * mem_dim), 0.0f);
    f.mem_tpos.assign(size_t(f.N * f.M), 0);
    f.mem_valid.assign(size_t(f.N * f.M), 0);
    f.obj_ptrs.assign(size_t(f.N * f.K * channels), 0.0f);
    f.ptr_tpos.assign(size_t(f.N * f.K), 0.0f);
    f.ptr_valid.assign(size_t(f.N * f.K), 0);
    const int64_t entry = hw * mem_dim;
    for (int64_t i = 0; i < f.N; ++i) {
        for (size_t j = 0; j < mems[i].size(); ++j) {
            const auto& [row, bits] = mems[i][j];
            if (static_cast<int64_t>(bits->size()) != entry) throw std::logic_error("memory entry has the wrong size");
            float* dst = &f.mem_feats[size_t((i * f.M + int64_t(j)) * entry)];
            for (int64_t k = 0; k < entry; ++k) dst[k] = from_bfloat16((*bits)[k]);
            f.mem_tpos[i * f.M + j] = row;
            f.mem_valid[i * f.M + j] = 1;
        }
        for (size_t j = 0; j < ptrs[i].size(); ++j) {
            const auto& [offset, pointer] = ptrs[i][j];
            if (static_cast<int64_t>(pointer->size()) != channels) throw std::logic_error("object pointer has the wrong size");
            std::copy(pointer->begin(), pointer->end(), f.obj_ptrs.begin() + (i * f.K + int64_t(j)) * channels);
            f.ptr_tpos[i * f.K + j] = offset;
            f.ptr_valid[i * f.K + j] = 1;
        }
    }
    return f;
}

}  // namespace m3rt
