// The I/O contract of every exported graph: a C++ mirror of medsam3_rt/graph_contract.py.
// Tensor and graph names appear as literals only here (and in contract.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace m3rt {
namespace gc {

inline const char* const TEXT_ENCODER = "text_encoder";
inline const char* const IMAGE_BACKBONE = "image_backbone";
inline const char* const DETECTOR = "detector";
inline const char* const TRACKER_INIT = "tracker_init";
inline const char* const TRACKER_STEP = "tracker_step";
inline const char* const MEMORY_ENCODER = "memory_encoder";
inline const std::vector<std::string> DETECTOR_GRAPHS = {TEXT_ENCODER, IMAGE_BACKBONE, DETECTOR};
inline const std::vector<std::string> TRACKER_GRAPHS = {TRACKER_INIT, TRACKER_STEP, MEMORY_ENCODER};

inline const char* const PIXEL_VALUES = "pixel_values";
inline const char* const DET_FPN[3] = {"det_fpn_0", "det_fpn_1", "det_fpn_2"};
inline const char* const TEXT_FEATURES = "text_features";
inline const char* const TEXT_MASK = "text_mask";
inline const char* const PRED_LOGITS = "pred_logits";
inline const char* const PRED_BOXES = "pred_boxes";
inline const char* const PRESENCE_LOGITS = "presence_logits";
inline const char* const PRED_MASKS = "pred_masks";
inline const char* const TRK_FEAT_S0 = "trk_feat_s0";
inline const char* const TRK_FEAT_S1 = "trk_feat_s1";
inline const char* const TRK_VISION_FEAT = "trk_vision_feat";
inline const char* const TRK_FEATURES[3] = {TRK_FEAT_S0, TRK_FEAT_S1, TRK_VISION_FEAT};
// tracker graphs
inline const char* const MASKS = "masks";
inline const char* const BINARIZE = "binarize";
inline const char* const MEM_FEATS = "mem_feats";
inline const char* const MEM_TPOS = "mem_tpos";
inline const char* const MEM_VALID = "mem_valid";
inline const char* const OBJ_PTRS = "obj_ptrs";
inline const char* const PTR_TPOS = "ptr_tpos";
inline const char* const PTR_VALID = "ptr_valid";
inline const char* const LOW_RES_MASKS = "low_res_masks";
inline const char* const IOU_SCORES = "iou_scores";
inline const char* const OBJECT_POINTER = "object_pointer";
inline const char* const OBJECT_SCORE_LOGITS = "object_score_logits";
inline const char* const MASK_LOGITS = "mask_logits";
inline const char* const MASKMEM_FEATURES = "maskmem_features";

inline const std::vector<std::string> SUPPORTED_DTYPES = {"float32", "float16", "int64", "int32", "bool", "uint8"};

// One dimension: a fixed size or a symbolic axis letter ("P", "N", ...).
using Dim = std::variant<int64_t, std::string>;

struct TensorSpec {
    std::string name;
    std::string dtype;
    std::vector<Dim> shape;
    bool operator==(const TensorSpec& o) const { return name == o.name && dtype == o.dtype && shape == o.shape; }
};

struct GraphSpec {
    std::string name;
    std::vector<TensorSpec> inputs;
    std::vector<TensorSpec> outputs;
    bool operator==(const GraphSpec& o) const { return inputs == o.inputs && outputs == o.outputs; }
    bool operator!=(const GraphSpec& o) const { return !(*this == o); }
};

struct ModelDims {
    int64_t image_size = 0;
    int64_t patch_size = 0;
    int64_t fpn_channels = 0;
    int64_t text_context = 0;
    int64_t num_queries = 0;
    int64_t tracker_feat_s0_channels = 0;
    int64_t tracker_feat_s1_channels = 0;
    int64_t memory_channels = 0;
    int64_t feat_size() const { return image_size / patch_size; }
    int64_t mask_size() const { return 4 * feat_size(); }
    bool has_tracker() const { return memory_channels > 0; }
};

// Every graph this library understands, for a model with these dimensions (expected_specs).
std::map<std::string, GraphSpec> expected_specs(const ModelDims& dims);

// "(name:dtype[dims], ...) -> (...)" with Python list formatting, like manifest._describe.
std::string describe(const GraphSpec& spec);

}  // namespace gc
}  // namespace m3rt
