// The C API: the only place where C++ exceptions stop. Every entry point checks its
// arguments, runs inside `guarded`, and turns an exception into a status code plus a
// thread-local one-line message (medsam3rt_last_error).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "error.h"
#include "manifest.h"
#include "medsam3rt/medsam3rt.h"
#include "postprocess.h"
#include "preprocess.h"
#include "prompt_pack.h"
#include "stream.h"
#include "version.h"

using namespace m3rt;

struct medsam3rt_model {
    std::shared_ptr<const Manifest> manifest;  // shared with the model's streams
    std::string text_encoder_sha256;
    std::shared_ptr<Backend> backend;
};

struct medsam3rt_prompts {
    PromptSet set;
};

struct medsam3rt_result {
    Segmentation seg;
    double preprocess_ms = 0, inference_ms = 0, postprocess_ms = 0;
};

struct medsam3rt_frame {
    FrameObjects objects;
};

namespace {

constexpr int64_t MAX_PROMPTS = 255;  // label maps are uint8

thread_local std::string t_last_error;

void set_error(const char* text) noexcept {
    try {
        t_last_error = text;
    } catch (...) {
        t_last_error.clear();  // out of memory while reporting: leave the message empty
    }
}

template <typename F>
medsam3rt_status guarded(F&& body) noexcept {
    try {
        body();
        return MEDSAM3RT_OK;
    } catch (const Error& e) {
        set_error(e.what());
        return e.status();
    } catch (const std::bad_alloc&) {
        set_error("out of memory");
    } catch (const std::exception& e) {
        set_error(("internal error: " + first_line(e.what())).c_str());
    } catch (...) {
        set_error("internal error: unknown exception");
    }
    return MEDSAM3RT_ERROR_INTERNAL;
}

template <typename T>
void need(const T* p, const char* what) {
    if (p == nullptr) throw UsageError(std::string(what) + " is NULL");
}

void need_index(size_t index, size_t count, const char* what) {
    if (index >= count) {
        throw UsageError(std::string(what) + " index " + std::to_string(index) + " is out of range (there are " + std::to_string(count) + ")");
    }
}

// Options structs grow at the end: a caller's struct must hold at least the version-1 fields.
template <typename T>
void need_struct_size(const T* options, size_t v1_size, const char* what, const char* init) {
    if (options->struct_size < v1_size) {
        throw UsageError(std::string(what) + ".struct_size is " + std::to_string(options->struct_size) + ", expected at least " +
                         std::to_string(v1_size) + "; initialise it with " + init + "()");
    }
}

// Prompts usable with `model`: made for its text encoder, 1..255 of them, the right shape.
void check_prompts(const medsam3rt_model& model, const PromptSet& set) {
    const int64_t P = static_cast<int64_t>(set.prompts.size());
    if (set.text_encoder_sha256 != model.text_encoder_sha256) {
        throw ModelError("these prompts were made for another model (text encoder " + set.text_encoder_sha256.substr(0, 12) +
                         "..., this model has " + model.text_encoder_sha256.substr(0, 12) + "...); load them with this model");
    }
    if (P == 0) throw UsageError("no prompt given: pass at least one text prompt");
    if (P > MAX_PROMPTS) throw UsageError(std::to_string(P) + " prompts given; at most 255 fit one label map");
    const gc::ModelDims& dims = model.manifest->dims;
    if (set.T != dims.text_context || set.C != dims.fpn_channels) {
        throw ModelError("prompt embeddings are " + std::to_string(set.T) + " x " + std::to_string(set.C) + ", this model needs " +
                         std::to_string(dims.text_context) + " x " + std::to_string(dims.fpn_channels) + "; rebuild the pack");
    }
}

// Output structs: the caller's struct_size says how many fields it has room for.
template <typename T>
size_t output_struct_size(const T* out, size_t v1_size, const char* what) {
    if (out->struct_size < v1_size) {
        throw UsageError(std::string(what) + ".struct_size is " + std::to_string(out->struct_size) + ", expected at least " +
                         std::to_string(v1_size) + "; set it to sizeof(" + what + ")");
    }
    return std::min<size_t>(out->struct_size, sizeof(T));
}

// Stream handles are tokens, never dereferenced: a released (or made-up) handle is found
// missing from this table and reported, instead of being a use after free. A shared_ptr keeps
// a stream alive while a call on it runs, even if another thread releases the handle.
struct StreamTable {
    std::mutex mu;
    std::unordered_map<uintptr_t, std::shared_ptr<Stream>> live;
    uintptr_t next = 0x57e40000;
};

StreamTable& streams() {
    static StreamTable* table = new StreamTable();  // never destroyed: streams may be released during exit
    return *table;
}

std::shared_ptr<Stream> stream_of(const medsam3rt_stream* handle) {
    if (handle == nullptr) throw UsageError("stream is NULL");
    StreamTable& t = streams();
    std::lock_guard<std::mutex> lock(t.mu);
    auto it = t.live.find(reinterpret_cast<uintptr_t>(handle));
    if (it == t.live.end()) throw UsageError("stream is not open (it was released, or is not a stream handle)");
    return it->second;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

extern "C" {

const char* medsam3rt_version(void) { return MEDSAM3RT_VERSION_STRING; }

const char* medsam3rt_last_error(void) { return t_last_error.c_str(); }

const char* medsam3rt_status_name(medsam3rt_status status) {
    switch (status) {
        case MEDSAM3RT_OK: return "ok";
        case MEDSAM3RT_ERROR_INTERNAL: return "internal";
        case MEDSAM3RT_ERROR_USAGE: return "usage";
        case MEDSAM3RT_ERROR_INPUT: return "input";
        case MEDSAM3RT_ERROR_MODEL: return "model";
        case MEDSAM3RT_ERROR_BACKEND: return "backend";
    }
    return "unknown";
}

medsam3rt_status medsam3rt_model_options_init(medsam3rt_model_options* options) {
    return guarded([&] {
        need(options, "options");
        std::memset(options, 0, sizeof(*options));
        options->struct_size = sizeof(*options);
        options->backend = "openvino";
        options->verify = MEDSAM3RT_VERIFY_HASH;
    });
}

medsam3rt_status medsam3rt_model_open(const char* model_dir, const medsam3rt_model_options* options, medsam3rt_model** model) {
    return guarded([&] {
        need(model, "model (output)");
        *model = nullptr;
        need(model_dir, "model_dir");
        medsam3rt_model_options opts;
        medsam3rt_model_options_init(&opts);
        if (options != nullptr) {
            need_struct_size(options, sizeof(medsam3rt_model_options), "medsam3rt_model_options", "medsam3rt_model_options_init");
            std::memcpy(&opts, options, sizeof(opts));
        }
        if (opts.verify < MEDSAM3RT_VERIFY_HASH || opts.verify > MEDSAM3RT_VERIFY_NONE) {
            throw UsageError("options.verify is " + std::to_string(opts.verify) +
                             "; use MEDSAM3RT_VERIFY_HASH, MEDSAM3RT_VERIFY_SIZE or MEDSAM3RT_VERIFY_NONE");
        }
        if (opts.num_threads < 0) throw UsageError("options.num_threads must be >= 0 (0 = backend default), got " + std::to_string(opts.num_threads));
        const Verify verify = opts.verify == MEDSAM3RT_VERIFY_HASH ? Verify::hash : opts.verify == MEDSAM3RT_VERIFY_SIZE ? Verify::size : Verify::none;
        auto m = std::make_unique<medsam3rt_model>();
        m->manifest = std::make_shared<const Manifest>(load_manifest(model_dir, verify));
        m->text_encoder_sha256 = m->manifest->text_encoder_sha256();
        BackendOptions bo;
        bo.device = opts.device ? opts.device : "";
        bo.num_threads = opts.num_threads;
        bo.cache_dir = opts.cache_dir ? opts.cache_dir : "";
        m->backend = open_backend(opts.backend ? opts.backend : "openvino", *m->manifest, bo);
        *model = m.release();
    });
}

void medsam3rt_model_release(medsam3rt_model* model) { delete model; }

medsam3rt_status medsam3rt_model_image_size(const medsam3rt_model* model, int32_t* image_size) {
    return guarded([&] {
        need(model, "model");
        need(image_size, "image_size (output)");
        *image_size = static_cast<int32_t>(model->manifest->dims.image_size);
    });
}

medsam3rt_status medsam3rt_model_backend(const medsam3rt_model* model, const char** backend) {
    return guarded([&] {
        need(model, "model");
        need(backend, "backend (output)");
        *backend = model->backend->name().c_str();
    });
}

medsam3rt_status medsam3rt_model_text_encoder_sha256(const medsam3rt_model* model, const char** sha256) {
    return guarded([&] {
        need(model, "model");
        need(sha256, "sha256 (output)");
        *sha256 = model->text_encoder_sha256.c_str();
    });
}

medsam3rt_status medsam3rt_prompts_load(const medsam3rt_model* model, const char* pack_path, medsam3rt_prompts** prompts) {
    return guarded([&] {
        need(prompts, "prompts (output)");
        *prompts = nullptr;
        need(model, "model");
        need(pack_path, "pack_path");
        auto p = std::make_unique<medsam3rt_prompts>();
        p->set = read_prompt_pack(pack_path, model->text_encoder_sha256);
        *prompts = p.release();
    });
}

medsam3rt_status medsam3rt_prompts_select(const medsam3rt_prompts* from, const char* const* names, size_t count, medsam3rt_prompts** prompts) {
    return guarded([&] {
        need(prompts, "prompts (output)");
        *prompts = nullptr;
        need(from, "from");
        if (count > 0) need(names, "names");
        std::vector<std::string> list;
        for (size_t i = 0; i < count; ++i) {
            if (names[i] == nullptr) throw UsageError("names[" + std::to_string(i) + "] is NULL");
            list.emplace_back(names[i]);
        }
        auto p = std::make_unique<medsam3rt_prompts>();
        p->set = select_prompts(from->set, list);
        *prompts = p.release();
    });
}

medsam3rt_status medsam3rt_prompts_count(const medsam3rt_prompts* prompts, size_t* count) {
    return guarded([&] {
        need(prompts, "prompts");
        need(count, "count (output)");
        *count = prompts->set.prompts.size();
    });
}

medsam3rt_status medsam3rt_prompts_text(const medsam3rt_prompts* prompts, size_t index, const char** text) {
    return guarded([&] {
        need(prompts, "prompts");
        need(text, "text (output)");
        need_index(index, prompts->set.prompts.size(), "prompt");
        *text = prompts->set.prompts[index].c_str();
    });
}

void medsam3rt_prompts_release(medsam3rt_prompts* prompts) { delete prompts; }

medsam3rt_status medsam3rt_segment_options_init(medsam3rt_segment_options* options) {
    return guarded([&] {
        need(options, "options");
        std::memset(options, 0, sizeof(*options));
        options->struct_size = sizeof(*options);
    });
}

medsam3rt_status medsam3rt_segment(medsam3rt_model* model, const medsam3rt_prompts* prompts, const medsam3rt_image* image,
                                   const medsam3rt_segment_options* options, medsam3rt_result** result) {
    return guarded([&] {
        need(result, "result (output)");
        *result = nullptr;
        need(model, "model");
        need(prompts, "prompts");
        need(image, "image");
        medsam3rt_segment_options opts;
        medsam3rt_segment_options_init(&opts);
        if (options != nullptr) {
            need_struct_size(options, sizeof(medsam3rt_segment_options), "medsam3rt_segment_options", "medsam3rt_segment_options_init");
            std::memcpy(&opts, options, sizeof(opts));
        }
        const PromptSet& set = prompts->set;
        const int64_t P = static_cast<int64_t>(set.prompts.size());
        check_prompts(*model, set);
        const gc::ModelDims& dims = model->manifest->dims;
        if (!(opts.min_score >= 0.0f && opts.min_score <= 1.0f)) {
            throw UsageError("min_score must be within 0..1, got " + py_float_repr(opts.min_score));
        }
        Window window{opts.use_window != 0, opts.window_low, opts.window_high};
        check_window(window);
        const ImageView view = image_view(*image);

        auto res = std::make_unique<medsam3rt_result>();
        const int64_t S = dims.image_size;
        auto t0 = std::chrono::steady_clock::now();
        std::vector<float> pixels(static_cast<size_t>(3 * S * S));
        pixel_values(view, model->manifest->preprocess, window, pixels.data());
        res->preprocess_ms = ms_since(t0);
        t0 = std::chrono::steady_clock::now();
        const TextInput text{P, set.T, set.C, set.features.data(), set.mask.data()};
        model->backend->detect(pixels.data(), text, [&](const DetectorView& det) {
            res->inference_ms = ms_since(t0);
            t0 = std::chrono::steady_clock::now();
            if (det.m != dims.mask_size() || det.Q != dims.num_queries) {
                throw InternalError("detector returned " + std::to_string(det.Q) + " queries of " + std::to_string(det.m) + " px masks");
            }
            postprocess(det, view.height, view.width, opts.min_score, model->manifest->mask_threshold, res->seg);
            res->postprocess_ms = ms_since(t0);
        });
        *result = res.release();
    });
}

medsam3rt_status medsam3rt_result_count(const medsam3rt_result* result, size_t* count) {
    return guarded([&] {
        need(result, "result");
        need(count, "count (output)");
        *count = static_cast<size_t>(result->seg.P);
    });
}

medsam3rt_status medsam3rt_result_size(const medsam3rt_result* result, int32_t* width, int32_t* height) {
    return guarded([&] {
        need(result, "result");
        need(width, "width (output)");
        need(height, "height (output)");
        *width = static_cast<int32_t>(result->seg.width);
        *height = static_cast<int32_t>(result->seg.height);
    });
}

medsam3rt_status medsam3rt_result_score(const medsam3rt_result* result, size_t index, float* score) {
    return guarded([&] {
        need(result, "result");
        need(score, "score (output)");
        need_index(index, size_t(result->seg.P), "prompt");
        *score = result->seg.scores[index];
    });
}

medsam3rt_status medsam3rt_result_box(const medsam3rt_result* result, size_t index, float box[4]) {
    return guarded([&] {
        need(result, "result");
        need(box, "box (output)");
        need_index(index, size_t(result->seg.P), "prompt");
        std::memcpy(box, &result->seg.boxes[index * 4], 4 * sizeof(float));
    });
}

medsam3rt_status medsam3rt_result_mask(const medsam3rt_result* result, size_t index, const uint8_t** mask) {
    return guarded([&] {
        need(result, "result");
        need(mask, "mask (output)");
        need_index(index, size_t(result->seg.P), "prompt");
        *mask = result->seg.masks.data() + index * size_t(result->seg.height * result->seg.width);
    });
}

medsam3rt_status medsam3rt_result_area(const medsam3rt_result* result, size_t index, int64_t* area) {
    return guarded([&] {
        need(result, "result");
        need(area, "area (output)");
        need_index(index, size_t(result->seg.P), "prompt");
        *area = result->seg.areas[index];
    });
}

medsam3rt_status medsam3rt_result_label_map(const medsam3rt_result* result, const uint8_t** label_map) {
    return guarded([&] {
        need(result, "result");
        need(label_map, "label_map (output)");
        *label_map = result->seg.label_map.data();
    });
}

medsam3rt_status medsam3rt_result_timings(const medsam3rt_result* result, double* preprocess_ms, double* inference_ms, double* postprocess_ms) {
    return guarded([&] {
        need(result, "result");
        if (preprocess_ms) *preprocess_ms = result->preprocess_ms;
        if (inference_ms) *inference_ms = result->inference_ms;
        if (postprocess_ms) *postprocess_ms = result->postprocess_ms;
    });
}

void medsam3rt_result_release(medsam3rt_result* result) { delete result; }

medsam3rt_status medsam3rt_stream_options_init(medsam3rt_stream_options* options) {
    return guarded([&] {
        need(options, "options");
        std::memset(options, 0, sizeof(*options));
        options->struct_size = sizeof(*options);
        options->nms = 1;
        options->fill_holes = 1;
        options->detection_threshold = -1.0;
        options->new_object_threshold = -1.0;
    });
}

medsam3rt_status medsam3rt_stream_open(medsam3rt_model* model, const medsam3rt_prompts* prompts, const medsam3rt_stream_options* options,
                                       medsam3rt_stream** stream) {
    return guarded([&] {
        need(stream, "stream (output)");
        *stream = nullptr;
        need(model, "model");
        need(prompts, "prompts");
        medsam3rt_stream_options opts;
        medsam3rt_stream_options_init(&opts);
        if (options != nullptr) {
            // the first version ended before `policy`: older callers get the default policy
            need_struct_size(options, offsetof(medsam3rt_stream_options, policy), "medsam3rt_stream_options", "medsam3rt_stream_options_init");
            std::memcpy(&opts, options, std::min<size_t>(options->struct_size, sizeof(opts)));
            opts.struct_size = sizeof(opts);
        }
        check_prompts(*model, prompts->set);
        if (opts.mode < MEDSAM3RT_STREAM_TRACK || opts.mode > MEDSAM3RT_STREAM_AUTO) {
            throw UsageError("options.mode is " + std::to_string(opts.mode) +
                             "; use MEDSAM3RT_STREAM_TRACK, MEDSAM3RT_STREAM_DETECT or MEDSAM3RT_STREAM_AUTO");
        }
        if (opts.policy != MEDSAM3RT_POLICY_META && opts.policy != MEDSAM3RT_POLICY_TRANSFORMERS) {
            throw UsageError("options.policy is " + std::to_string(opts.policy) + "; use MEDSAM3RT_POLICY_META or MEDSAM3RT_POLICY_TRANSFORMERS");
        }
        StreamOptions so;
        so.policy = opts.policy == MEDSAM3RT_POLICY_META ? PolicyMode::meta : PolicyMode::transformers;
        so.mode = opts.mode == MEDSAM3RT_STREAM_TRACK ? StreamMode::track : opts.mode == MEDSAM3RT_STREAM_DETECT ? StreamMode::detect : StreamMode::auto_select;
        so.nms = opts.nms != 0;
        so.fill_holes = opts.fill_holes != 0;
        so.max_objects = opts.max_objects;
        so.max_cond_frames = opts.max_cond_frames;
        so.forget_after = opts.forget_after;
        so.detection_threshold = opts.detection_threshold;
        so.new_object_threshold = opts.new_object_threshold;
        check_stream_options(so);
        Window window{opts.use_window != 0, opts.window_low, opts.window_high};
        check_window(window);
        auto s = std::make_shared<Stream>(model->manifest, model->backend, prompts->set, so, window);
        StreamTable& t = streams();
        std::lock_guard<std::mutex> lock(t.mu);
        const uintptr_t token = t.next;
        t.next += 16;
        t.live.emplace(token, std::move(s));
        *stream = reinterpret_cast<medsam3rt_stream*>(token);
    });
}

medsam3rt_status medsam3rt_stream_push(medsam3rt_stream* stream, const medsam3rt_image* image, medsam3rt_frame** frame) {
    return guarded([&] {
        need(frame, "frame (output)");
        *frame = nullptr;
        std::shared_ptr<Stream> s = stream_of(stream);
        need(image, "image");
        const ImageView view = image_view(*image);
        auto f = std::make_unique<medsam3rt_frame>();
        f->objects = s->push(view);
        *frame = f.release();
    });
}

medsam3rt_status medsam3rt_stream_reset(medsam3rt_stream* stream) {
    return guarded([&] { stream_of(stream)->reset(); });
}

medsam3rt_status medsam3rt_stream_tracking(const medsam3rt_stream* stream, int32_t* tracking) {
    return guarded([&] {
        std::shared_ptr<Stream> s = stream_of(stream);
        need(tracking, "tracking (output)");
        *tracking = s->tracking() ? 1 : 0;
    });
}

medsam3rt_status medsam3rt_stream_frame_index(const medsam3rt_stream* stream, int64_t* frame_index) {
    return guarded([&] {
        std::shared_ptr<Stream> s = stream_of(stream);
        need(frame_index, "frame_index (output)");
        *frame_index = s->frame_index();
    });
}

medsam3rt_status medsam3rt_stream_num_objects(const medsam3rt_stream* stream, size_t* count, int64_t* next_object_id) {
    return guarded([&] {
        std::shared_ptr<Stream> s = stream_of(stream);
        need(count, "count (output)");
        *count = static_cast<size_t>(s->num_objects());
        if (next_object_id) *next_object_id = s->next_object_id();
    });
}

medsam3rt_status medsam3rt_stream_state_bytes(const medsam3rt_stream* stream, int64_t* bytes) {
    return guarded([&] {
        std::shared_ptr<Stream> s = stream_of(stream);
        need(bytes, "bytes (output)");
        *bytes = s->state_nbytes();
    });
}

void medsam3rt_stream_release(medsam3rt_stream* stream) {
    if (stream == nullptr) return;
    std::shared_ptr<Stream> last;  // destroyed after the lock is released
    try {
        StreamTable& t = streams();
        std::lock_guard<std::mutex> lock(t.mu);
        auto it = t.live.find(reinterpret_cast<uintptr_t>(stream));
        if (it == t.live.end()) return;  // released twice, or not a stream: nothing to do
        last = std::move(it->second);
        t.live.erase(it);
    } catch (...) {
    }
}

medsam3rt_status medsam3rt_frame_index(const medsam3rt_frame* frame, int64_t* frame_index) {
    return guarded([&] {
        need(frame, "frame");
        need(frame_index, "frame_index (output)");
        *frame_index = frame->objects.frame_index;
    });
}

medsam3rt_status medsam3rt_frame_size(const medsam3rt_frame* frame, int32_t* width, int32_t* height) {
    return guarded([&] {
        need(frame, "frame");
        need(width, "width (output)");
        need(height, "height (output)");
        *width = static_cast<int32_t>(frame->objects.width);
        *height = static_cast<int32_t>(frame->objects.height);
    });
}

medsam3rt_status medsam3rt_frame_count(const medsam3rt_frame* frame, size_t* count) {
    return guarded([&] {
        need(frame, "frame");
        need(count, "count (output)");
        *count = frame->objects.object_ids.size();
    });
}

medsam3rt_status medsam3rt_frame_object(const medsam3rt_frame* frame, size_t index, medsam3rt_object* object) {
    return guarded([&] {
        need(frame, "frame");
        need(object, "object (output)");
        const FrameObjects& f = frame->objects;
        need_index(index, f.object_ids.size(), "object");
        const size_t room = output_struct_size(object, sizeof(medsam3rt_object), "medsam3rt_object");
        medsam3rt_object o;
        std::memset(&o, 0, sizeof o);
        o.struct_size = static_cast<uint32_t>(room);
        o.object_id = f.object_ids[index];
        o.prompt_index = static_cast<int32_t>(f.prompt_ids[index]);
        o.score = f.scores[index];
        o.tracker_score = f.tracker_scores[index];
        std::memcpy(o.box, &f.boxes[index * 4], sizeof o.box);
        o.area = f.areas[index];
        o.mask = f.masks.data() + index * size_t(f.height * f.width);
        std::memcpy(object, &o, room);
    });
}

medsam3rt_status medsam3rt_frame_label_map(const medsam3rt_frame* frame, const uint8_t** label_map) {
    return guarded([&] {
        need(frame, "frame");
        need(label_map, "label_map (output)");
        *label_map = frame->objects.label_map.data();
    });
}

medsam3rt_status medsam3rt_frame_timings(const medsam3rt_frame* frame, medsam3rt_timings* timings) {
    return guarded([&] {
        need(frame, "frame");
        need(timings, "timings (output)");
        const size_t room = output_struct_size(timings, sizeof(medsam3rt_timings), "medsam3rt_timings");
        const auto& ms = frame->objects.timings_ms;
        medsam3rt_timings t{static_cast<uint32_t>(room), ms[0], ms[1], ms[2], ms[3], ms[4], ms[5]};
        std::memcpy(timings, &t, room);
    });
}

void medsam3rt_frame_release(medsam3rt_frame* frame) { delete frame; }

}  // extern "C"
