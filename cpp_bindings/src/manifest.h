// manifest.json: parse, validate and integrity-check an export directory, with the rules and
// messages of medsam3_rt/manifest.py (load_manifest / parse_manifest / verify_files).
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include "contract.h"

namespace m3rt {

inline const char* const MANIFEST_NAME = "manifest.json";
inline const char* const MANIFEST_SCHEMA = "medsam3-rt/manifest";
constexpr int MANIFEST_SCHEMA_VERSION = 1;

enum class Verify { hash, size, none };

struct FileEntry {
    std::string path;
    std::string sha256;
    int64_t bytes = 0;
};

struct GraphEntry {
    std::string name;
    std::string file;
    gc::GraphSpec spec;
    std::vector<std::string> external_data;
};

struct Preprocess {
    int64_t image_size = 0;
    double rescale_factor = 1.0 / 255.0;
    std::array<double, 3> mean{0.5, 0.5, 0.5};
    std::array<double, 3> std{0.5, 0.5, 0.5};
    bool antialias = true;
};

// One entry of the manifest's "engines" list (written by `medsam3-rt build`, validated like
// medsam3_rt/engines.py EngineEntry.from_json); used by the TensorRT backend only.
struct ShapeRange {
    std::vector<int64_t> min, opt, max;
};
struct EngineEntry {
    std::string graph, file, sha256, precision, tensorrt, device_name, compute_capability, source_onnx_sha256;
    int64_t bytes = 0;
    std::vector<std::string> flags;
    std::vector<std::map<std::string, ShapeRange>> profiles;
    bool has_flag(const std::string& f) const {
        for (const auto& x : flags) {
            if (x == f) return true;
        }
        return false;
    }
};

struct Manifest {
    std::string root;  // the export directory, as given (without trailing '/')
    int schema_version = MANIFEST_SCHEMA_VERSION;
    gc::ModelDims dims;
    Preprocess preprocess;
    std::string tokenizer_file;
    std::vector<std::string> graph_order;  // as listed in the manifest
    std::map<std::string, GraphEntry> graphs;
    std::vector<FileEntry> files;  // in manifest order
    double mask_threshold = 0.5;
    std::vector<EngineEntry> engines;
    bool has_tracker = false;
    std::string tracker_json;  // the 'tracker' section as JSON text ("" when absent); see tracker_settings()
    std::string source_class;  // model.source.class ("" when absent), for messages

    const GraphEntry& graph(const std::string& name) const;
    std::string path_of(const std::string& rel) const { return root + "/" + rel; }
    // Identifies the text embeddings this model produces; prompt packs are keyed by it.
    std::string text_encoder_sha256() const;
};

// `Sam3VideoModel` / `Sam3TrackerVideoModel` config values the streaming merge uses, from the
// manifest's 'tracker' section (medsam3_rt/tracker/settings.py TrackerSettings).
struct TrackerSettings {
    double score_threshold_detection = 0, det_nms_thresh = 0, assoc_iou_thresh = 0, trk_assoc_iou_thresh = 0, new_det_thresh = 0;
    bool recondition_on_trk_masks = true;
    int64_t hotstart_delay = 0, hotstart_unmatch_thresh = 0, hotstart_dup_thresh = 0;
    bool suppress_unmatched_only_within_hotstart = true;
    int64_t init_trk_keep_alive = 0, max_trk_keep_alive = 0, min_trk_keep_alive = 0;
    double suppress_overlapping_based_on_recent_occlusion_threshold = 0;
    bool decrease_trk_keep_alive_for_empty_masklets = false;
    int64_t fill_hole_area = 0, max_num_objects = 0, recondition_every_nth_frame = 0;
    double high_conf_thresh = 0, high_iou_thresh = 0;
    int64_t num_maskmem = 0, max_cond_frame_num = 0, max_object_pointers_in_encoder = 0;
};

// TrackerSettings.from_manifest: the same casts (Python's bool/int/float) and messages.
TrackerSettings tracker_settings(const Manifest& manifest);
// float(manifest.tracker.get(key, fallback)), with `fallback` when there is no tracker section.
double tracker_float(const Manifest& manifest, const char* key, double fallback);
// A string of the manifest's 'tracker' section, `fallback` when absent.
std::string tracker_string(const Manifest& manifest, const char* key, const std::string& fallback);
// A JSON boolean of the tracker section (`fallback` when absent; anything else is a ModelError).
bool tracker_bool(const Manifest& manifest, const char* key, bool fallback);

// Validate a manifest.json text; `root` only names the directory in messages and paths.
Manifest parse_manifest(const std::string& json_text, const std::string& root, const std::string& path_for_messages);
// Check every recorded file: present, recorded size, SHA-256 (cached per process by path, size and mtime).
void verify_files(const Manifest& manifest, Verify verify);
// Read, validate and integrity-check the manifest of an export directory.
Manifest load_manifest(const std::string& model_dir, Verify verify);

}  // namespace m3rt
