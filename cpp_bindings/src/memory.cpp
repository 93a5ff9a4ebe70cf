#include "memory.h"

#include <algorithm>
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
}

void ObjectTrack::prune(int64_t frame, int64_t num_maskmem, int64_t max_pointers, int64_t max_cond) {
    for (auto it = recent.begin(); it != recent.end();) {
        if (it->first <= frame - (max_pointers - 1)) {
            it = recent.erase(it);
        } else {
            ++it;
        }
    }
    for (auto& [t, e] : recent) {
        if (t <= frame - (num_maskmem - 1)) e.maskmem = std::vector<uint16_t>();
    }
    // sorted(cond)[:-max_cond]: all but the newest max_cond
    while (static_cast<int64_t>(cond.size()) > max_cond) cond.erase(cond.begin());
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
                 int64_t mem_dim, int64_t channels) {
    std::vector<std::vector<std::pair<int64_t, const std::vector<uint16_t>*>>> mems;
    std::vector<std::vector<std::pair<float, const std::vector<float>*>>> ptrs;
    const double norm = static_cast<double>(std::max<int64_t>(max_pointers - 1, 1));
    for (ObjectTrack* trk : tracks) {
        std::vector<std::pair<int64_t, const std::vector<uint16_t>*>> m;
        for (const auto& [t, e] : trk->cond) {
            if (e.has_maskmem()) m.emplace_back(num_maskmem - 1, &e.maskmem);
        }
        for (int64_t k = num_maskmem - 1; k > 0; --k) {
            auto it = trk->recent.find(frame - k);
            if (it != trk->recent.end() && it->second.has_maskmem()) m.emplace_back(k - 1, &it->second.maskmem);
        }
        std::vector<std::pair<float, const std::vector<float>*>> p;
        for (const auto& [t, e] : trk->cond) {
            // (frame - t) / norm in float64, stored in a float32 array
            if (t <= frame) p.emplace_back(static_cast<float>(static_cast<double>(frame - t) / norm), &e.pointer);
        }
        for (int64_t d = 1; d < max_pointers; ++d) {
            auto it = trk->recent.find(frame - d);
            if (it != trk->recent.end()) p.emplace_back(static_cast<float>(static_cast<double>(d) / norm), &it->second.pointer);
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
