#include "contract.h"

namespace m3rt {
namespace gc {
namespace {

TensorSpec f32(const std::string& name, std::vector<Dim> shape) { return {name, "float32", std::move(shape)}; }

std::string dim_repr(const Dim& d) {
    if (const auto* i = std::get_if<int64_t>(&d)) return std::to_string(*i);
    return "'" + std::get<std::string>(d) + "'";
}

std::string tensors(const std::vector<TensorSpec>& ts) {
    std::string out;
    for (size_t i = 0; i < ts.size(); ++i) {
        if (i) out += ", ";
        out += ts[i].name + ":" + ts[i].dtype + "[";
        for (size_t j = 0; j < ts[i].shape.size(); ++j) out += (j ? ", " : "") + dim_repr(ts[i].shape[j]);
        out += "]";
    }
    return out;
}

}  // namespace

std::string describe(const GraphSpec& spec) { return "(" + tensors(spec.inputs) + ") -> (" + tensors(spec.outputs) + ")"; }

std::map<std::string, GraphSpec> expected_specs(const ModelDims& dims) {
    const int64_t C = dims.fpn_channels, T = dims.text_context, Q = dims.num_queries, S = dims.image_size, s = dims.feat_size();
    const std::string P = "P", N = "N", M = "M", K = "K";
    std::vector<TensorSpec> fpn = {f32(DET_FPN[0], {1, C, 4 * s, 4 * s}), f32(DET_FPN[1], {1, C, 2 * s, 2 * s}), f32(DET_FPN[2], {1, C, s, s})};
    std::map<std::string, GraphSpec> specs;
    specs[TEXT_ENCODER] = {TEXT_ENCODER,
                           {{"input_ids", "int64", {P, T}}, {"attention_mask", "int64", {P, T}}},
                           {f32(TEXT_FEATURES, {P, T, C})}};
    std::vector<TensorSpec> det_in = fpn;
    det_in.push_back(f32(TEXT_FEATURES, {P, T, C}));
    det_in.push_back({TEXT_MASK, "bool", {P, T}});
    specs[DETECTOR] = {DETECTOR,
                       det_in,
                       {f32(PRED_LOGITS, {P, Q}), f32(PRED_BOXES, {P, Q, 4}), f32(PRESENCE_LOGITS, {P, 1}),
                        f32(PRED_MASKS, {P, Q, 4 * s, 4 * s}), f32("semantic_seg", {P, 1, 4 * s, 4 * s})}};
    std::vector<TensorSpec> backbone_out = fpn;
    if (dims.has_tracker()) {
        const int64_t c0 = dims.tracker_feat_s0_channels, c1 = dims.tracker_feat_s1_channels, mem = dims.memory_channels;
        const int64_t m = dims.mask_size();
        std::vector<TensorSpec> trk = {f32(TRK_FEAT_S0, {1, c0, 4 * s, 4 * s}), f32(TRK_FEAT_S1, {1, c1, 2 * s, 2 * s}),
                                       f32(TRK_VISION_FEAT, {1, C, s, s})};
        backbone_out.insert(backbone_out.end(), trk.begin(), trk.end());
        std::vector<TensorSpec> init_in = trk;
        init_in.push_back(f32(MASKS, {N, 1, m, m}));
        specs[TRACKER_INIT] = {TRACKER_INIT,
                               init_in,
                               {f32(LOW_RES_MASKS, {N, 1, m, m}), f32(OBJECT_POINTER, {N, C}), f32(OBJECT_SCORE_LOGITS, {N, 1})}};
        std::vector<TensorSpec> step_in = trk;
        step_in.push_back(f32(MEM_FEATS, {N, M, s * s, mem}));
        step_in.push_back({MEM_TPOS, "int64", {N, M}});
        step_in.push_back({MEM_VALID, "bool", {N, M}});
        step_in.push_back(f32(OBJ_PTRS, {N, K, C}));
        step_in.push_back(f32(PTR_TPOS, {N, K}));
        step_in.push_back({PTR_VALID, "bool", {N, K}});
        specs[TRACKER_STEP] = {TRACKER_STEP,
                               step_in,
                               {f32(LOW_RES_MASKS, {N, 1, m, m}), f32(IOU_SCORES, {N, 3}), f32(OBJECT_SCORE_LOGITS, {N, 1}),
                                f32(OBJECT_POINTER, {N, C})}};
        specs[MEMORY_ENCODER] = {MEMORY_ENCODER,
                                 {f32(TRK_VISION_FEAT, {1, C, s, s}), f32(MASK_LOGITS, {N, 1, 4 * m, 4 * m}),
                                  {BINARIZE, "bool", {N, 1}}, f32(OBJECT_SCORE_LOGITS, {N, 1})},
                                 {f32(MASKMEM_FEATURES, {N, s * s, mem})}};
    }
    specs[IMAGE_BACKBONE] = {IMAGE_BACKBONE, {f32(PIXEL_VALUES, {1, 3, S, S})}, backbone_out};
    for (auto& [name, spec] : specs) spec.name = name;
    return specs;
}

}  // namespace gc
}  // namespace m3rt
