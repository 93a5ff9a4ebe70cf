// What an inference backend does for the library: run the image backbone and the detector on
// one image for P prompts and hand the detector outputs to a consumer while they are alive.
// Everything else (manifest, preprocessing, prompt packs, post-processing, the C API) is
// shared by all backends.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <vector>

#include "error.h"
#include "manifest.h"
#include "memory.h"
#include "postprocess.h"

namespace m3rt {

struct BackendOptions {
    std::string device;  // backend-specific; empty = default
    int num_threads = 0;
    std::string cache_dir;
};

// Text input of the detector: (P, T, C) float32 features and (P, T) 0/1 mask, contiguous.
struct TextInput {
    int64_t P = 0, T = 0, C = 0;
    const float* features = nullptr;
    const uint8_t* mask = nullptr;
};

// Outputs of the tracker graphs, copied out of the backend (row-major float32).
struct TrackerStepOutputs {
    std::vector<float> low_res_masks;        // (N, m, m)
    std::vector<float> iou_scores;           // (N, 3): memory selection reads their best
    std::vector<float> object_score_logits;  // (N,)
    std::vector<float> object_pointer;       // (N, C)
};
struct TrackerInitOutputs {
    std::vector<float> object_pointer;       // (N, C)
    std::vector<float> object_score_logits;  // (N,)
};

// The graphs of one stream: the backbone once per frame, then the detector and the three
// tracker graphs on its features. Owned by one stream, used by one thread at a time.
class TrackerSession {
public:
    virtual ~TrackerSession() = default;
    // Backbone on (1, 3, S, S) pixel values; its features stay for the calls below.
    virtual void encode_image(const float* pixel_values) = 0;
    // Detector on the current features; `consume` sees its outputs during the call only.
    virtual void detect(const TextInput& text, const std::function<void(const DetectorView&)>& consume) = 0;
    virtual void tracker_step(const StepFeeds& feeds, TrackerStepOutputs& out) = 0;
    // masks: (N, 1, m, m) float32 0/1.
    virtual void tracker_init(const float* masks, int64_t N, TrackerInitOutputs& out) = 0;
    // mask_logits (N, 1, 4m, 4m), binarize (N,) bool, object_score_logits (N,) -> (N, hw, mem) into `out`.
    virtual void memory_encoder(const float* mask_logits, const uint8_t* binarize, const float* object_score_logits, int64_t N,
                                std::vector<float>& out) = 0;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const std::string& name() const = 0;
    // pixel_values: (1, 3, S, S) float32. Calls `consume` once with views of the detector's
    // outputs, valid only during the call. Must be safe to call from several threads at once.
    virtual void detect(const float* pixel_values, const TextInput& text, const std::function<void(const DetectorView&)>& consume) = 0;
    // A session for one stream (compiles the tracker graphs on first use; without
    // `tracker_graphs` only encode_image and detect work). Safe to call from several threads;
    // each session is used by one thread at a time.
    virtual std::unique_ptr<TrackerSession> open_tracker(bool tracker_graphs) {
        (void)tracker_graphs;
        throw BackendError(name(), "streaming is not implemented for this backend yet; use backend \"openvino\"");
    }
};

// Opens the image backbone and detector of `manifest` on the named backend ("openvino",
// "tensorrt"); an unknown or unavailable backend is MEDSAM3RT_ERROR_BACKEND/USAGE.
std::unique_ptr<Backend> open_backend(const std::string& name, const Manifest& manifest, const BackendOptions& options);

// Backends compiled into this library (for messages).
std::string compiled_backends();

#ifdef MEDSAM3RT_HAVE_OPENVINO
std::unique_ptr<Backend> open_openvino(const Manifest& manifest, const BackendOptions& options);
#endif
#ifdef MEDSAM3RT_HAVE_TENSORRT
std::unique_ptr<Backend> open_tensorrt(const Manifest& manifest, const BackendOptions& options);
#endif

// Compares the names and dtypes a graph file declares with the manifest's contract, with the
// message of GraphRunner.check_declared_io. Maps are name -> dtype name ("float32", "bool", ...).
void check_declared_io(const GraphEntry& entry, const std::map<std::string, std::string>& inputs,
                       const std::map<std::string, std::string>& outputs, const std::string& file_name);

}  // namespace m3rt
