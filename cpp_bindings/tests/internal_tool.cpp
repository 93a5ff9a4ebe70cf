// medsam3rt_internal: the library's internal steps as a command-line tool, so that
// tests/cpp/test_cpp_bindings.py can compare each with the Python runtime on the same data.
//
//   sha256-selftest                         FIPS 180-2 example vectors (ctest)
//   sha256 FILE...                          hex digests
//   specs IMAGE PATCH FPN T Q S0 S1 MEM     expected graph specs as JSON (graph_contract.to_json)
//   manifest FILE...                        "OK" or "ERR <status> <message>" per manifest.json text
//   preprocess S ANTIALIAS FORMAT TYPE W H STRIDE USE_WINDOW LOW HIGH IN OUT
//                                           pixel_values (float32, 3*S*S) of a raw image file
//   postprocess H W MIN_SCORE THRESHOLD P Q M LOGITS BOXES PRESENCE MASKS OUT
//                                           post-processing of raw float32 detector outputs
//   resize N IH IW OH OW ANTIALIAS IN OUT   resample.resize of N float32 planes
//   fill-holes N H W MAX_AREA IN OUT        masks.fill_holes of N float32 logit planes
//   nms Q PIXELS PROB_THR IOU_THR PROBS MASKS OUT
//                                           masks.nms_masks -> Q keep bytes
//   suppress-shrunk N H W GROUPS IN OUT     masks.suppress_shrunk (GROUPS: comma-separated ints)
//   non-overlap N PIXELS GROUPS SCORES IN OUT
//                                           masks.object_wise_non_overlap of N 0/1 byte masks
//   boxes N H W IN OUT                      masks.boxes_from_masks of N 0/1 byte masks
//   bfloat16 N IN OUT / sigmoid N IN OUT    to_bfloat16 (uint16 out) / postprocess.sigmoid
//   tracker-settings FILE...                "OK <settings>" or "ERR <status> <message>" per manifest.json
//   policy GOLDEN.json GOLDEN.masks         the merge policy's decisions on every recorded frame of a
//                                           tests/golden/tracker_policy scenario, as JSON (one object per frame)
//   memory-select SCENARIO.json             memory.gather with memory selection on a scripted track
//                                           group (tracker scores per frame), pruned as the stream
//                                           does: per frame and object the memory frames and rows,
//                                           pointer frames and offsets, as JSON
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "contract.h"
#include "error.h"
#include "manifest.h"
#include "memory.h"
#include "policy.h"
#include "masks.h"
#include "postprocess.h"
#include "preprocess.h"
#include "sha256.h"

using namespace m3rt;

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

template <typename T>
std::vector<T> read_array(const std::string& path, size_t count) {
    const std::string blob = read_file(path);
    if (blob.size() != count * sizeof(T)) throw std::runtime_error(path + ": expected " + std::to_string(count * sizeof(T)) + " bytes");
    std::vector<T> out(count);
    std::memcpy(out.data(), blob.data(), blob.size());
    return out;
}

void write_file(const std::string& path, const void* data, size_t size) {
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) throw std::runtime_error("cannot write " + path);
}

int sha256_selftest() {
    const std::string million(1000000, 'a');
    const std::vector<std::pair<std::string, std::string>> vectors = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {million, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
    };
    int failed = 0;
    for (const auto& [text, want] : vectors) {
        const std::string got = sha256_hex(text.data(), text.size());
        // The same text fed in uneven pieces must hash the same.
        Sha256 h;
        for (size_t i = 0, step = 1; i < text.size(); i += step, step = step % 97 + 13) h.update(text.data() + i, std::min(step, text.size() - i));
        const std::string pieces = h.hexdigest();
        if (got != want || pieces != want) {
            std::cout << "FAIL sha256 of " << text.size() << " bytes: " << got << " / " << pieces << " != " << want << "\n";
            ++failed;
        }
    }
    std::cout << (vectors.size() - failed) << " passed, " << failed << " failed\n";
    return failed ? 1 : 0;
}

nlohmann::ordered_json tensor_json(const gc::TensorSpec& t) {
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (const auto& d : t.shape) {
        if (const auto* i = std::get_if<int64_t>(&d)) {
            shape.push_back(*i);
        } else {
            shape.push_back(std::get<std::string>(d));
        }
    }
    return {{"name", t.name}, {"dtype", t.dtype}, {"shape", shape}};
}

// -- the merge policy on golden frames (tests/tracker_policy_golden.py writes them) ---------

std::vector<int64_t> int_list(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

std::vector<float> float_list(const nlohmann::json& j) {
    std::vector<float> out;
    for (const auto& v : j) out.push_back(static_cast<float>(v.get<double>()));
    return out;
}

// int16 fixed point (value / 1024) planes at an offset of the masks file.
Planes fixed_planes(const nlohmann::json& ref, const std::vector<int16_t>& raw) {
    const auto shape = int_list(ref["shape"]);
    Planes p(shape.at(0), shape.at(1), shape.at(2));
    const size_t offset = ref["offset"].get<size_t>();
    if (offset + p.v.size() > raw.size()) throw std::runtime_error("mask reference beyond the masks file");
    for (size_t i = 0; i < p.v.size(); ++i) p.v[i] = static_cast<float>(raw[offset + i]) / 1024.0f;
    return p;
}

nlohmann::json pairs(const std::map<int64_t, int64_t>& m) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [k, v] : m) out.push_back({k, v});
    return out;
}

// HotstartState <-> the golden file's JSON (tracker_policy_golden.hotstart_json).
HotstartState hotstart_from_json(const nlohmann::json& j) {
    HotstartState s;
    for (const auto& e : j["first_frame"]) s.first_frame[e[0].get<int64_t>()] = e[1].get<int64_t>();
    for (const auto& e : j["unmatched_frames"]) s.unmatched_frames[e[0].get<int64_t>()] = int_list(e[1]);
    for (const auto& e : j["keep_alive"]) s.keep_alive[e[0].get<int64_t>()] = e[1].get<int64_t>();
    for (const auto& e : j["overlap_frames"]) s.overlap_frames[{e[0].get<int64_t>(), e[1].get<int64_t>()}] = int_list(e[2]);
    for (const auto& e : j["removed"]) s.removed.insert(e.get<int64_t>());
    return s;
}

nlohmann::json hotstart_json(const HotstartState& s) {
    nlohmann::json j = {{"first_frame", nlohmann::json::array()}, {"unmatched_frames", nlohmann::json::array()},
                        {"keep_alive", nlohmann::json::array()}, {"overlap_frames", nlohmann::json::array()},
                        {"removed", nlohmann::json::array()}};
    for (const auto& [o, f] : s.first_frame) j["first_frame"].push_back({o, f});
    for (const auto& [o, f] : s.unmatched_frames) j["unmatched_frames"].push_back({o, f});
    for (const auto& [o, k] : s.keep_alive) j["keep_alive"].push_back({o, k});
    for (const auto& [pair, f] : s.overlap_frames) j["overlap_frames"].push_back({pair.first, pair.second, f});
    for (int64_t o : s.removed) j["removed"].push_back(o);
    return j;
}

int policy_golden(const std::string& json_path, const std::string& masks_path) {
    const nlohmann::json doc = nlohmann::json::parse(read_file(json_path));
    const std::string blob = read_file(masks_path);
    std::vector<int16_t> raw(blob.size() / 2);
    std::memcpy(raw.data(), blob.data(), raw.size() * 2);
    const nlohmann::json& c = doc["config"];
    if (c["mode"] != "transformers" && c["mode"] != "meta") throw std::runtime_error("unknown policy mode " + c["mode"].dump());
    PolicyConfig cfg;
    const bool meta = c["mode"] == "meta";
    cfg.mode = meta ? PolicyMode::meta : PolicyMode::transformers;
    if (meta) {  // files of mode "transformers" may predate these fields
        cfg.hotstart_delay = c["hotstart_delay"];
        cfg.hotstart_unmatch_thresh = c["hotstart_unmatch_thresh"];
        cfg.hotstart_dup_thresh = c["hotstart_dup_thresh"];
        cfg.suppress_unmatched_only_within_hotstart = c["suppress_unmatched_only_within_hotstart"];
        cfg.decrease_trk_keep_alive_for_empty_masklets = c["decrease_trk_keep_alive_for_empty_masklets"];
    }
    cfg.score_threshold_detection = c["score_threshold_detection"];
    cfg.det_nms_thresh = c["det_nms_thresh"];
    cfg.assoc_iou_thresh = c["assoc_iou_thresh"];
    cfg.trk_assoc_iou_thresh = c["trk_assoc_iou_thresh"];
    cfg.new_det_thresh = c["new_det_thresh"];
    cfg.high_conf_thresh = c["high_conf_thresh"];
    cfg.high_iou_thresh = c["high_iou_thresh"];
    cfg.recondition_every_nth_frame = c["recondition_every_nth_frame"];
    cfg.recondition_on_trk_masks = c["recondition_on_trk_masks"];
    cfg.suppress_overlapping_based_on_recent_occlusion_threshold = c["suppress_overlapping_based_on_recent_occlusion_threshold"];
    cfg.init_trk_keep_alive = c["init_trk_keep_alive"];
    cfg.max_trk_keep_alive = c["max_trk_keep_alive"];
    cfg.min_trk_keep_alive = c["min_trk_keep_alive"];
    cfg.max_objects = c["max_objects"];
    cfg.forget_after = c["forget_after"].is_null() ? 0 : c["forget_after"].get<int64_t>();
    cfg.nms = c["nms"];
    nlohmann::json out = nlohmann::json::array();
    for (const auto& f : doc["frames"]) {
        Detections det;
        det.masks = fixed_planes(f["det"]["masks"], raw);
        det.scores = float_list(f["det"]["scores"]);
        det.prompt_ids = int_list(f["det"]["prompt_ids"]);
        TrackTable tracks;
        tracks.obj_ids = int_list(f["tracks"]["obj_ids"]);
        tracks.prompt_ids = int_list(f["tracks"]["prompt_ids"]);
        tracks.last_occluded = int_list(f["tracks"]["last_occluded"]);
        tracks.keep_alive = int_list(f["tracks"]["keep_alive"]);
        if (f["tracks"].contains("first_frame")) tracks.first_frame = int_list(f["tracks"]["first_frame"]);
        const int64_t t = f["t"].get<int64_t>();
        HotstartState before;
        if (meta) before = hotstart_from_json(f["hotstart"]);
        MergeDecision d = merge(det, tracks, fixed_planes(f["trk_masks"], raw), float_list(f["trk_scores"]), t, f["next_id"].get<int64_t>(), cfg,
                                meta ? &before : nullptr);
        std::vector<int64_t> counts = int_list(f["forget_counts"]);
        const std::vector<uint8_t> removed = forget(int_list(f["forget_ids"]), counts, int_list(f["shown_ids"]), cfg.forget_after);
        const Association& a = d.association;
        nlohmann::json r = {{"new", a.new_dets},
                            {"unmatched", a.unmatched},
                            {"matched", a.matched},
                            {"high_conf", pairs(a.high_conf)},
                            {"new_dets", d.new_dets},
                            {"new_obj_ids", d.new_obj_ids},
                            {"recond", pairs(d.recond)},
                            {"keep_alive", d.keep_alive},
                            {"last_occluded", d.last_occluded},
                            {"rerun", d.rerun},
                            {"memory_scores", d.memory_scores},
                            {"shown_sha256", sha256_hex(d.shown.v.data(), d.shown.v.size() * sizeof(float))},
                            {"memory_sha256", sha256_hex(d.memory_masks.v.data(), d.memory_masks.v.size() * sizeof(float))},
                            {"empty_frames", counts},
                            {"removed", std::vector<bool>(removed.begin(), removed.end())}};
        if (meta) {  // the hot-start state after this frame, pruned to the objects still tracked (Stream's order)
            std::vector<int64_t> alive;
            for (int64_t o : tracks.obj_ids) alive.push_back(o);
            alive.insert(alive.end(), d.new_obj_ids.begin(), d.new_obj_ids.end());
            alive.erase(std::remove_if(alive.begin(), alive.end(),
                                       [&](int64_t o) {
                                           return std::count(d.removed.begin(), d.removed.end(), o) || std::count(d.evicted.begin(), d.evicted.end(), o);
                                       }),
                        alive.end());
            prune(d.hotstart, alive, t, cfg);
            r["hotstart_removed"] = d.removed;
            r["evicted"] = d.evicted;
            r["hidden"] = d.hidden;
            r["hotstart_after"] = hotstart_json(d.hotstart);
        }
        out.push_back(r);
    }
    std::cout << out.dump() << "\n";
    return 0;
}

// Memories and pointers carry frame + 100 * object (exact in bfloat16 below 256).
int memory_select(const char* path) {
    const nlohmann::json sc = nlohmann::json::parse(read_file(path));
    const int64_t num_maskmem = sc["num_maskmem"], max_pointers = sc["max_pointers"], first = sc["first"], last = sc["last"];
    const int64_t n = sc["objects"], C = 4, HW = 4;
    const double threshold = sc["threshold"];
    auto entry = [&](int64_t frame, int64_t obj) {
        MemoryEntry e;
        const float v = static_cast<float>(frame + 100 * obj);
        e.pointer.assign(size_t(C), v);
        e.maskmem.assign(size_t(HW * C), to_bfloat16(v));
        return e;
    };
    std::vector<ObjectTrack> tracks(static_cast<size_t>(n));
    std::vector<ObjectTrack*> ptrs;
    for (int64_t o = 0; o < n; ++o) {
        tracks[size_t(o)].obj_id = o;
        tracks[size_t(o)].first_frame = first;
        tracks[size_t(o)].cond[first] = entry(first, o);
        ptrs.push_back(&tracks[size_t(o)]);
    }
    nlohmann::json out = nlohmann::json::array();
    for (int64_t t = first + 1; t < last; ++t) {
        const StepFeeds f = gather(ptrs, t, num_maskmem, max_pointers, HW, C, C, threshold);
        nlohmann::json frame = nlohmann::json::array();
        for (int64_t o = 0; o < n; ++o) {
            nlohmann::json mems = nlohmann::json::array(), pts = nlohmann::json::array();
            for (int64_t j = 0; j < f.M; ++j) {
                if (f.mem_valid[size_t(o * f.M + j)]) mems.push_back({f.mem_feats[size_t((o * f.M + j) * HW * C)], f.mem_tpos[size_t(o * f.M + j)]});
            }
            for (int64_t j = 0; j < f.K; ++j) {
                if (f.ptr_valid[size_t(o * f.K + j)]) pts.push_back({f.obj_ptrs[size_t((o * f.K + j) * C)], f.ptr_tpos[size_t(o * f.K + j)]});
            }
            frame.push_back({{"mems", mems}, {"ptrs", pts}});
        }
        out.push_back(frame);
        const auto& logits = sc["logits"][size_t(t)];
        const auto& ious = sc["ious"][size_t(t)];
        for (int64_t o = 0; o < n; ++o) {
            tracks[size_t(o)].recent[t] = entry(t, o);
            std::vector<float> iou = ious[size_t(o)].get<std::vector<float>>();
            tracks[size_t(o)].scores[t] = memory_score(logits[size_t(o)].get<float>(), iou.data(), static_cast<int64_t>(iou.size()));
        }
        const auto valid = valid_frames(ptrs, t, threshold);
        const std::vector<int64_t> none;
        for (ObjectTrack* tr : ptrs) {
            auto g = valid.find(tr->first_frame);
            tr->prune(t, num_maskmem, max_pointers, 4, g != valid.end() ? &g->second : &none);
        }
    }
    std::cout << out.dump() << "\n";
    return 0;
}

int run(int argc, char** argv) {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "sha256-selftest") return sha256_selftest();
    if (cmd == "sha256") {
        for (int i = 2; i < argc; ++i) std::cout << sha256_file(argv[i]) << "  " << argv[i] << "\n";
        return 0;
    }
    if (cmd == "specs" && argc == 10) {
        gc::ModelDims d;
        int64_t* fields[] = {&d.image_size, &d.patch_size, &d.fpn_channels, &d.text_context, &d.num_queries,
                             &d.tracker_feat_s0_channels, &d.tracker_feat_s1_channels, &d.memory_channels};
        for (int i = 0; i < 8; ++i) *fields[i] = std::stoll(argv[2 + i]);
        nlohmann::ordered_json out = nlohmann::ordered_json::object();
        for (const auto& [name, spec] : gc::expected_specs(d)) {
            nlohmann::ordered_json g = {{"inputs", nlohmann::ordered_json::array()}, {"outputs", nlohmann::ordered_json::array()}};
            for (const auto& t : spec.inputs) g["inputs"].push_back(tensor_json(t));
            for (const auto& t : spec.outputs) g["outputs"].push_back(tensor_json(t));
            out[name] = g;
        }
        std::cout << out.dump() << "\n";
        return 0;
    }
    if (cmd == "manifest") {
        for (int i = 2; i < argc; ++i) {
            try {
                parse_manifest(read_file(argv[i]), "model", argv[i]);
                std::cout << "OK\n";
            } catch (const Error& e) {
                std::cout << "ERR " << int(e.status()) << " " << e.what() << "\n";
            }
        }
        return 0;
    }
    if (cmd == "preprocess" && argc == 14) {
        Preprocess pre;
        pre.image_size = std::stoll(argv[2]);
        pre.antialias = std::stoi(argv[3]) != 0;
        medsam3rt_image image{};
        image.format = std::stoi(argv[4]);
        image.type = std::stoi(argv[5]);
        image.width = std::stoi(argv[6]);
        image.height = std::stoi(argv[7]);
        image.stride_bytes = std::stoll(argv[8]);
        const Window window{std::stoi(argv[9]) != 0, std::stod(argv[10]), std::stod(argv[11])};
        const std::string blob = read_file(argv[12]);
        image.data = blob.data();
        std::vector<float> out(size_t(3 * pre.image_size * pre.image_size));
        pixel_values(image_view(image), pre, window, out.data());
        write_file(argv[13], out.data(), out.size() * sizeof(float));
        return 0;
    }
    if (cmd == "postprocess" && argc == 14) {
        const int64_t H = std::stoll(argv[2]), W = std::stoll(argv[3]);
        const float min_score = std::stof(argv[4]);
        const double threshold = std::stod(argv[5]);
        DetectorView v;
        v.P = std::stoll(argv[6]);
        v.Q = std::stoll(argv[7]);
        v.m = std::stoll(argv[8]);
        const auto logits = read_array<float>(argv[9], size_t(v.P * v.Q));
        const auto boxes = read_array<float>(argv[10], size_t(v.P * v.Q * 4));
        const auto presence = read_array<float>(argv[11], size_t(v.P));
        const auto masks = read_array<float>(argv[12], size_t(v.P * v.Q * v.m * v.m));
        v.pred_logits = logits.data();
        v.pred_boxes = boxes.data();
        v.presence_logits = presence.data();
        v.pred_masks = masks.data();
        Segmentation s;
        postprocess(v, H, W, min_score, threshold, s);
        const std::string out = argv[13];
        write_file(out + ".scores", s.scores.data(), s.scores.size() * 4);
        write_file(out + ".boxes", s.boxes.data(), s.boxes.size() * 4);
        write_file(out + ".query", s.query_index.data(), s.query_index.size() * 8);
        write_file(out + ".masks", s.masks.data(), s.masks.size());
        write_file(out + ".labels", s.label_map.data(), s.label_map.size());
        return 0;
    }
    auto ints = [](const std::string& csv) {
        std::vector<int64_t> out;
        std::stringstream ss(csv);
        std::string item;
        while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
        return out;
    };
    auto arg = [&](int i) { return std::stoll(argv[i]); };
    if (cmd == "resize" && argc == 10) {
        Planes in(arg(2), arg(3), arg(4));
        in.v = read_array<float>(argv[8], in.v.size());
        const Planes out = resize_planes(in, arg(5), arg(6), arg(7) != 0);
        write_file(argv[9], out.v.data(), out.v.size() * 4);
        return 0;
    }
    if (cmd == "fill-holes" && argc == 8) {
        Planes p(arg(2), arg(3), arg(4));
        p.v = read_array<float>(argv[6], p.v.size());
        fill_holes(p, arg(5));
        write_file(argv[7], p.v.data(), p.v.size() * 4);
        return 0;
    }
    if (cmd == "nms" && argc == 9) {
        const int64_t Q = arg(2), px = arg(3);
        const auto probs = read_array<float>(argv[6], size_t(Q));
        const auto masks = read_array<float>(argv[7], size_t(Q * px));
        const auto keep = nms_masks(probs.data(), masks.data(), Q, px, std::stod(argv[4]), std::stod(argv[5]));
        write_file(argv[8], keep.data(), keep.size());
        return 0;
    }
    if (cmd == "suppress-shrunk" && argc == 8) {
        Planes p(arg(2), arg(3), arg(4));
        p.v = read_array<float>(argv[6], p.v.size());
        suppress_shrunk(p, ints(argv[5]));
        write_file(argv[7], p.v.data(), p.v.size() * 4);
        return 0;
    }
    if (cmd == "non-overlap" && argc == 8) {
        const int64_t n = arg(2), px = arg(3);
        auto masks = read_array<uint8_t>(argv[6], size_t(n * px));
        object_wise_non_overlap(masks, px, read_array<float>(argv[5], size_t(n)), ints(argv[4]));
        write_file(argv[7], masks.data(), masks.size());
        return 0;
    }
    if (cmd == "boxes" && argc == 7) {
        const int64_t n = arg(2), h = arg(3), w = arg(4);
        const auto masks = read_array<uint8_t>(argv[5], size_t(n * h * w));
        std::vector<float> boxes(size_t(n * 4));
        for (int64_t i = 0; i < n; ++i) box_from_mask(&masks[size_t(i * h * w)], h, w, &boxes[size_t(i * 4)]);
        write_file(argv[6], boxes.data(), boxes.size() * 4);
        return 0;
    }
    if ((cmd == "bfloat16" || cmd == "sigmoid") && argc == 5) {
        const auto x = read_array<float>(argv[3], size_t(arg(2)));
        if (cmd == "sigmoid") {
            std::vector<float> y(x.size());
            for (size_t i = 0; i < x.size(); ++i) y[i] = sigmoid(x[i]);
            write_file(argv[4], y.data(), y.size() * 4);
        } else {
            std::vector<uint16_t> y(x.size());
            for (size_t i = 0; i < x.size(); ++i) y[i] = to_bfloat16(x[i]);
            write_file(argv[4], y.data(), y.size() * 2);
        }
        return 0;
    }
    if (cmd == "policy" && argc == 4) return policy_golden(argv[2], argv[3]);
    if (cmd == "memory-select" && argc == 3) return memory_select(argv[2]);
    if (cmd == "tracker-settings") {
        for (int i = 2; i < argc; ++i) {
            try {
                Manifest m = parse_manifest(read_file(argv[i]), "model", argv[i]);
                const TrackerSettings t = tracker_settings(m);
                std::cout << "OK " << t.score_threshold_detection << " " << t.new_det_thresh << " " << t.recondition_on_trk_masks << " "
                          << t.fill_hole_area << " " << t.max_num_objects << " " << t.num_maskmem << " " << t.max_cond_frame_num << " "
                          << t.max_object_pointers_in_encoder << " " << t.high_conf_thresh << "\n";
            } catch (const Error& e) {
                std::cout << "ERR " << int(e.status()) << " " << e.what() << "\n";
            }
        }
        return 0;
    }
    std::cerr << "usage: see the comment at the top of tests/internal_tool.cpp\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const Error& e) {
        std::cout << "ERR " << int(e.status()) << " " << e.what() << "\n";
        return 3;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
