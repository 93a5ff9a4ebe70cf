// OpenVINO backend: reads the exported ONNX graphs directly (no conversion step), runs on
// CPUs and, with device "GPU"/"NPU", Intel GPUs and NPUs. Mirrors medsam3_rt/backends/openvino.py:
// f32 precision pinned (no silent bf16 on AMX CPUs), LATENCY hint, one pool of infer requests
// so that several threads can segment with one model.
#include <algorithm>
#include <mutex>
#include <openvino/openvino.hpp>
#include <vector>

#include "backend.h"
#include "error.h"

namespace m3rt {
namespace {

const std::string NAME = "openvino";

std::string dtype_name(const ov::element::Type& t) {
    if (t == ov::element::f32) return "float32";
    if (t == ov::element::f16) return "float16";
    if (t == ov::element::i64) return "int64";
    if (t == ov::element::i32) return "int32";
    if (t == ov::element::boolean) return "bool";
    if (t == ov::element::u8) return "uint8";
    return t.get_type_name();
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? "none" : s;
}

// Runs `body`, turning OpenVINO's exceptions into backend errors (ours pass through).
template <typename F>
void ov_guard(const std::string& device, const char* graph, F&& body) {
    try {
        body();
    } catch (const Error&) {
        throw;
    } catch (const std::bad_alloc&) {
        throw;
    } catch (const std::exception& e) {
        throw Error(MEDSAM3RT_ERROR_BACKEND, std::string("OpenVINO inference failed on ") + device + " (" + graph + "): " + first_line(e.what()));
    }
}

// A (row-major, contiguous) tensor over caller memory; OpenVINO reads it in place.
template <typename T>
ov::Tensor wrap(const ov::element::Type& type, const ov::Shape& shape, const T* data) {
    return ov::Tensor(type, shape, const_cast<T*>(data));
}

size_t count(const ov::Shape& s) {
    size_t n = 1;
    for (size_t d : s) n *= d;
    return n;
}

// Copies an output of the expected shape into `out`.
void take(ov::InferRequest& r, const char* name, const ov::Shape& want, std::vector<float>& out, const char* graph) {
    const ov::Tensor t = r.get_tensor(name);
    if (t.get_shape() != want || t.get_element_type() != ov::element::f32) {
        throw InternalError(std::string(graph) + " output '" + name + "' is " + t.get_shape().to_string() + ", expected " + want.to_string());
    }
    const float* p = t.data<const float>();
    out.assign(p, p + count(want));
}

// Runs the detector (its FPN inputs already set) on the prompts of `text`; the view points into
// the request's output tensors, valid until the request runs again.
DetectorView run_detector(ov::InferRequest& detector, const TextInput& text) {
    const ov::Shape ptc{size_t(text.P), size_t(text.T), size_t(text.C)}, pt{size_t(text.P), size_t(text.T)};
    detector.set_tensor(gc::TEXT_FEATURES, wrap(ov::element::f32, ptc, text.features));
    detector.set_tensor(gc::TEXT_MASK, wrap(ov::element::boolean, pt, text.mask));
    detector.infer();
    const ov::Tensor logits = detector.get_tensor(gc::PRED_LOGITS), boxes = detector.get_tensor(gc::PRED_BOXES),
                     presence = detector.get_tensor(gc::PRESENCE_LOGITS), masks = detector.get_tensor(gc::PRED_MASKS);
    const ov::Shape ms = masks.get_shape();
    if (ms.size() != 4 || int64_t(ms[0]) != text.P || logits.get_shape() != ov::Shape{ms[0], ms[1]} ||
        boxes.get_shape() != ov::Shape{ms[0], ms[1], 4} || presence.get_shape() != ov::Shape{ms[0], 1} || ms[2] != ms[3]) {
        throw InternalError("detector outputs have unexpected shapes (pred_masks " + ms.to_string() + ")");
    }
    DetectorView view;
    view.P = text.P;
    view.Q = int64_t(ms[1]);
    view.m = int64_t(ms[2]);
    view.pred_logits = logits.data<const float>();
    view.pred_boxes = boxes.data<const float>();
    view.presence_logits = presence.data<const float>();
    view.pred_masks = masks.data<const float>();
    return view;
}

class OpenVinoBackend;

class OpenVinoTracker final : public TrackerSession {
public:
    OpenVinoTracker(OpenVinoBackend& b, bool tracker_graphs);
    void encode_image(const float* pixel_values) override;
    void detect(const TextInput& text, const std::function<void(const DetectorView&)>& consume) override;
    void tracker_step(const StepFeeds& feeds, TrackerStepOutputs& out) override;
    void tracker_init(const float* masks, int64_t N, TrackerInitOutputs& out) override;
    void memory_encoder(const float* mask_logits, const uint8_t* binarize, const float* object_score_logits, int64_t N,
                        std::vector<float>& out) override;

private:
    void feed_tracker_features(ov::InferRequest& r, bool all);
    OpenVinoBackend& b_;
    ov::InferRequest backbone_, detector_, step_, init_, memory_;
    bool tracker_graphs_ = false;
    bool encoded_ = false;
};

class OpenVinoBackend final : public Backend {
    friend class OpenVinoTracker;

public:
    OpenVinoBackend(const Manifest& m, const BackendOptions& options) : S_(m.dims.image_size), manifest_(m), options_(options) {
        device_ = options.device.empty() ? "CPU" : options.device;
        std::transform(device_.begin(), device_.end(), device_.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        const std::string base = device_.substr(0, device_.find('.'));
        if (base != "CPU" && base != "GPU" && base != "NPU") {
            throw UsageError("OpenVINO device '" + options.device + "' is not one of CPU, GPU, NPU (optionally with .N, e.g. GPU.1)");
        }
        std::vector<std::string> available;
        try {
            available = core_.get_available_devices();
        } catch (const std::exception& e) {
            throw BackendError(NAME, "OpenVINO cannot start: " + first_line(e.what()));
        }
        bool found = false;
        for (const auto& d : available) found = found || d.substr(0, d.find('.')) == base;
        if (!found) throw BackendError(NAME, "OpenVINO device " + device_ + " is not available here (has: " + join(available) + ")");
        if (!options.cache_dir.empty()) core_.set_property(ov::cache_dir(options.cache_dir));
        backbone_ = compile(m, m.graph(gc::IMAGE_BACKBONE), options);
        detector_ = compile(m, m.graph(gc::DETECTOR), options);
    }

    const std::string& name() const override { return NAME; }

    void detect(const float* pixel_values, const TextInput& text, const std::function<void(const DetectorView&)>& consume) override {
        std::unique_ptr<Requests> r = acquire();
        struct Return {
            OpenVinoBackend* self;
            std::unique_ptr<Requests>& r;
            ~Return() {
                std::lock_guard<std::mutex> lock(self->mu_);
                self->idle_.push_back(std::move(r));
            }
        } give_back{this, r};
        DetectorView view;
        try {
            // Inputs wrap the caller's memory; backbone outputs go to the detector without a copy.
            r->backbone.set_tensor(gc::PIXEL_VALUES, ov::Tensor(ov::element::f32, ov::Shape{1, 3, size_t(S_), size_t(S_)},
                                                                const_cast<float*>(pixel_values)));
            r->backbone.infer();
            for (const char* name : gc::DET_FPN) r->detector.set_tensor(name, r->backbone.get_tensor(name));
            view = run_detector(r->detector, text);
        } catch (const Error&) {
            throw;
        } catch (const std::bad_alloc&) {
            throw;
        } catch (const std::exception& e) {
            throw Error(MEDSAM3RT_ERROR_BACKEND, "OpenVINO inference failed on " + device_ + ": " + first_line(e.what()));
        }
        consume(view);
    }

    std::unique_ptr<TrackerSession> open_tracker(bool tracker_graphs) override {
        if (tracker_graphs && !manifest_.has_tracker) throw InternalError("open_tracker on an export without tracker graphs");
        if (tracker_graphs) {
            std::lock_guard<std::mutex> lock(compile_mu_);
            if (!tracker_compiled_) {
                step_ = compile(manifest_, manifest_.graph(gc::TRACKER_STEP), options_);
                // OpenVINO's CPU plugin (2026.4) fails on tracker_init batches of N >= 2 (a broadcast
                // Add of the (1, C, s, s) image features before a Convolution: "Can not clone with new
                // dims"), and a failed call can break later calls of the same compiled model. Its rows
                // are independent (one object's mask each), so it runs one object per call. (A model
                // reshaped to a static N = 1 also works but gives object pointers ~1e-6 apart from the
                // dynamic one, which the Python runtime uses.)
                init_ = compile(manifest_, manifest_.graph(gc::TRACKER_INIT), options_);
                memory_ = compile(manifest_, manifest_.graph(gc::MEMORY_ENCODER), options_);
                tracker_compiled_ = true;
            }
        }
        return std::make_unique<OpenVinoTracker>(*this, tracker_graphs);
    }

private:
    struct Requests {
        ov::InferRequest backbone, detector;
    };

    std::unique_ptr<Requests> acquire() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (!idle_.empty()) {
                auto r = std::move(idle_.back());
                idle_.pop_back();
                return r;
            }
        }
        auto r = std::make_unique<Requests>();
        r->backbone = backbone_.create_infer_request();
        r->detector = detector_.create_infer_request();
        return r;
    }

    ov::CompiledModel compile(const Manifest& m, const GraphEntry& entry, const BackendOptions& options) {
        const std::string path = m.path_of(entry.file);
        std::shared_ptr<ov::Model> model;
        try {
            model = core_.read_model(path);
        } catch (const std::exception& e) {
            throw ModelError("OpenVINO cannot read " + entry.file + ": " + first_line(e.what()));
        }
        // An ONNX output that also feeds other nodes can carry several tensor names ('conv2d_14'
        // and 'trk_feat_s0'); get_any_name() may pick either, so prefer the contract's name.
        auto port_name = [](const ov::Output<ov::Node>& p, const std::vector<gc::TensorSpec>& wanted) {
            for (const auto& t : wanted) {
                if (p.get_names().count(t.name)) return t.name;
            }
            return p.get_any_name();
        };
        std::map<std::string, std::string> inputs, outputs;
        for (const auto& p : model->inputs()) inputs[port_name(p, entry.spec.inputs)] = dtype_name(p.get_element_type());
        for (const auto& p : model->outputs()) outputs[port_name(p, entry.spec.outputs)] = dtype_name(p.get_element_type());
        check_declared_io(entry, inputs, outputs, entry.file);
        ov::AnyMap config;
        std::vector<ov::PropertyName> supported;
        try {
            supported = core_.get_property(device_, ov::supported_properties);
        } catch (const std::exception&) {
        }
        auto has = [&](const std::string& key) { return std::find(supported.begin(), supported.end(), key) != supported.end(); };
        if (has(ov::hint::performance_mode.name())) config.emplace(ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY));
        if (has(ov::hint::inference_precision.name())) config.emplace(ov::hint::inference_precision(ov::element::f32));
        if (options.num_threads > 0) config.emplace(ov::inference_num_threads(options.num_threads));
        try {
            return core_.compile_model(model, device_, config);
        } catch (const std::exception& e) {
            throw ModelError("OpenVINO cannot compile " + entry.file + " for " + device_ + ": " + first_line(e.what()));
        }
    }

    ov::Core core_;
    std::string device_;
    int64_t S_;
    Manifest manifest_;
    BackendOptions options_;
    ov::CompiledModel backbone_, detector_;
    std::mutex mu_;
    std::vector<std::unique_ptr<Requests>> idle_;
    std::mutex compile_mu_;
    bool tracker_compiled_ = false;
    ov::CompiledModel step_, init_, memory_;
};

OpenVinoTracker::OpenVinoTracker(OpenVinoBackend& b, bool tracker_graphs) : b_(b), tracker_graphs_(tracker_graphs) {
    ov_guard(b.device_, "infer requests", [&] {
        backbone_ = b.backbone_.create_infer_request();
        detector_ = b.detector_.create_infer_request();
        if (tracker_graphs) {
            step_ = b.step_.create_infer_request();
            init_ = b.init_.create_infer_request();
            memory_ = b.memory_.create_infer_request();
        }
    });
}

void OpenVinoTracker::encode_image(const float* pixel_values) {
    const size_t S = size_t(b_.S_);
    encoded_ = false;
    ov_guard(b_.device_, gc::IMAGE_BACKBONE, [&] {
        backbone_.set_tensor(gc::PIXEL_VALUES, wrap(ov::element::f32, ov::Shape{1, 3, S, S}, pixel_values));
        backbone_.infer();
    });
    encoded_ = true;
}

void OpenVinoTracker::feed_tracker_features(ov::InferRequest& r, bool all) {
    if (!encoded_ || !tracker_graphs_) throw InternalError("tracker graph run before the backbone, or without tracker graphs");
    if (all) {
        for (const char* name : gc::TRK_FEATURES) r.set_tensor(name, backbone_.get_tensor(name));
    } else {
        r.set_tensor(gc::TRK_VISION_FEAT, backbone_.get_tensor(gc::TRK_VISION_FEAT));
    }
}

void OpenVinoTracker::detect(const TextInput& text, const std::function<void(const DetectorView&)>& consume) {
    if (!encoded_) throw InternalError("detector run before the backbone");
    DetectorView view;
    ov_guard(b_.device_, gc::DETECTOR, [&] {
        for (const char* name : gc::DET_FPN) detector_.set_tensor(name, backbone_.get_tensor(name));
        view = run_detector(detector_, text);
    });
    consume(view);
}

void OpenVinoTracker::tracker_step(const StepFeeds& f, TrackerStepOutputs& out) {
    const size_t N = size_t(f.N), M = size_t(f.M), K = size_t(f.K);
    const int64_t m = b_.manifest_.dims.mask_size(), C = b_.manifest_.dims.fpn_channels;
    ov_guard(b_.device_, gc::TRACKER_STEP, [&] {
        feed_tracker_features(step_, true);
        step_.set_tensor(gc::MEM_FEATS, wrap(ov::element::f32, {N, M, size_t(f.hw), size_t(f.mem_dim)}, f.mem_feats.data()));
        step_.set_tensor(gc::MEM_TPOS, wrap(ov::element::i64, {N, M}, f.mem_tpos.data()));
        step_.set_tensor(gc::MEM_VALID, wrap(ov::element::boolean, {N, M}, f.mem_valid.data()));
        step_.set_tensor(gc::OBJ_PTRS, wrap(ov::element::f32, {N, K, size_t(f.channels)}, f.obj_ptrs.data()));
        step_.set_tensor(gc::PTR_TPOS, wrap(ov::element::f32, {N, K}, f.ptr_tpos.data()));
        step_.set_tensor(gc::PTR_VALID, wrap(ov::element::boolean, {N, K}, f.ptr_valid.data()));
        step_.infer();
        take(step_, gc::LOW_RES_MASKS, {N, 1, size_t(m), size_t(m)}, out.low_res_masks, gc::TRACKER_STEP);
        take(step_, gc::IOU_SCORES, {N, 3}, out.iou_scores, gc::TRACKER_STEP);
        take(step_, gc::OBJECT_SCORE_LOGITS, {N, 1}, out.object_score_logits, gc::TRACKER_STEP);
        take(step_, gc::OBJECT_POINTER, {N, size_t(C)}, out.object_pointer, gc::TRACKER_STEP);
    });
}

void OpenVinoTracker::tracker_init(const float* masks, int64_t N, TrackerInitOutputs& out) {
    const int64_t m = b_.manifest_.dims.mask_size(), C = b_.manifest_.dims.fpn_channels;
    out.object_pointer.assign(size_t(N * C), 0.0f);
    out.object_score_logits.assign(size_t(N), 0.0f);
    std::vector<float> pointer, score;
    ov_guard(b_.device_, gc::TRACKER_INIT, [&] {
        feed_tracker_features(init_, true);
        for (int64_t i = 0; i < N; ++i) {  // one object per call (see open_tracker)
            init_.set_tensor(gc::MASKS, wrap(ov::element::f32, {1, 1, size_t(m), size_t(m)}, masks + i * m * m));
            init_.infer();
            take(init_, gc::OBJECT_POINTER, {1, size_t(C)}, pointer, gc::TRACKER_INIT);
            take(init_, gc::OBJECT_SCORE_LOGITS, {1, 1}, score, gc::TRACKER_INIT);
            std::copy(pointer.begin(), pointer.end(), out.object_pointer.begin() + i * C);
            out.object_score_logits[size_t(i)] = score[0];
        }
    });
}

void OpenVinoTracker::memory_encoder(const float* mask_logits, const uint8_t* binarize, const float* scores, int64_t N,
                                     std::vector<float>& out) {
    const auto& d = b_.manifest_.dims;
    const size_t n = size_t(N), big = size_t(4 * d.mask_size()), hw = size_t(d.feat_size() * d.feat_size());
    ov_guard(b_.device_, gc::MEMORY_ENCODER, [&] {
        feed_tracker_features(memory_, false);
        memory_.set_tensor(gc::MASK_LOGITS, wrap(ov::element::f32, {n, 1, big, big}, mask_logits));
        memory_.set_tensor(gc::BINARIZE, wrap(ov::element::boolean, {n, 1}, binarize));
        memory_.set_tensor(gc::OBJECT_SCORE_LOGITS, wrap(ov::element::f32, {n, 1}, scores));
        memory_.infer();
        take(memory_, gc::MASKMEM_FEATURES, {n, hw, size_t(d.memory_channels)}, out, gc::MEMORY_ENCODER);
    });
}

}  // namespace

std::unique_ptr<Backend> open_openvino(const Manifest& manifest, const BackendOptions& options) {
    return std::make_unique<OpenVinoBackend>(manifest, options);
}

}  // namespace m3rt
