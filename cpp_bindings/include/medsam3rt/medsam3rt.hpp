// medsam3rt.hpp - header-only C++17 RAII wrapper over the C API (medsam3rt.h).
//
//   medsam3rt::Model model("model/");                         // throws medsam3rt::Error
//   medsam3rt::Prompts prompts = model.load_prompts("model/prompt_packs/abdomen.m3pack");
//   medsam3rt::Result r = model.segment(prompts, medsam3rt::Image::u8(pixels, w, h, MEDSAM3RT_BGR));
//   const uint8_t* labels = r.label_map();                   // h rows of w bytes
//
//   medsam3rt::Stream stream = model.stream(prompts);          // video, live ultrasound, slices
//   medsam3rt::Frame f = stream.push(medsam3rt::Image::u8(frame, w, h, MEDSAM3RT_BGR));
//   for (size_t i = 0; i < f.size(); ++i) f.object(i).object_id; // stable ids, masks, boxes
//
// Handles are move-only and released in their destructors. Errors throw medsam3rt::Error
// carrying the status code and medsam3rt_last_error()'s text.
#ifndef MEDSAM3RT_HPP
#define MEDSAM3RT_HPP

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "medsam3rt.h"

namespace medsam3rt {

class Error : public std::runtime_error {
public:
    Error(medsam3rt_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    medsam3rt_status status() const noexcept { return status_; }

private:
    medsam3rt_status status_;
};

namespace detail {
inline void check(medsam3rt_status status) {
    if (status != MEDSAM3RT_OK) throw Error(status, medsam3rt_last_error());
}

template <typename T, void (*Release)(T*)>
class Handle {
public:
    Handle() = default;
    explicit Handle(T* raw) noexcept : raw_(raw) {}
    Handle(Handle&& o) noexcept : raw_(std::exchange(o.raw_, nullptr)) {}
    Handle& operator=(Handle&& o) noexcept {
        if (this != &o) {
            Release(raw_);
            raw_ = std::exchange(o.raw_, nullptr);
        }
        return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { Release(raw_); }
    T* get() const noexcept { return raw_; }
    explicit operator bool() const noexcept { return raw_ != nullptr; }

private:
    T* raw_ = nullptr;
};
}  // namespace detail

inline std::string version() { return medsam3rt_version(); }

// A borrowed image (see medsam3rt_image); the pixels must outlive the segment() call only.
struct Image {
    medsam3rt_image desc{};
    static Image u8(const void* data, int32_t width, int32_t height, medsam3rt_pixel_format format, int64_t stride_bytes = 0) {
        return Image{{data, width, height, stride_bytes, format, MEDSAM3RT_UINT8}};
    }
    static Image u16(const void* data, int32_t width, int32_t height, medsam3rt_pixel_format format, int64_t stride_bytes = 0) {
        return Image{{data, width, height, stride_bytes, format, MEDSAM3RT_UINT16}};
    }
};

struct SegmentOptions {
    float min_score = 0.0f;
    bool use_window = false;
    double window_low = 0.0, window_high = 0.0;
    static SegmentOptions window(double low, double high, float min_score = 0.0f) { return {min_score, true, low, high}; }
};

class Prompts {
public:
    explicit Prompts(medsam3rt_prompts* raw) : h_(raw) {}
    size_t size() const {
        size_t n = 0;
        detail::check(medsam3rt_prompts_count(h_.get(), &n));
        return n;
    }
    std::string text(size_t i) const {
        const char* t = nullptr;
        detail::check(medsam3rt_prompts_text(h_.get(), i, &t));
        return t;
    }
    // A new prompt set with the named prompts, in this order.
    Prompts select(const std::vector<std::string>& names) const {
        std::vector<const char*> c;
        c.reserve(names.size());
        for (const auto& n : names) c.push_back(n.c_str());
        medsam3rt_prompts* out = nullptr;
        detail::check(medsam3rt_prompts_select(h_.get(), c.data(), c.size(), &out));
        return Prompts(out);
    }
    const medsam3rt_prompts* get() const noexcept { return h_.get(); }

private:
    detail::Handle<medsam3rt_prompts, medsam3rt_prompts_release> h_;
};

class Result {
public:
    explicit Result(medsam3rt_result* raw) : h_(raw) {
        detail::check(medsam3rt_result_size(h_.get(), &width_, &height_));
        detail::check(medsam3rt_result_count(h_.get(), &count_));
    }
    size_t size() const noexcept { return count_; }
    int32_t width() const noexcept { return width_; }
    int32_t height() const noexcept { return height_; }
    float score(size_t i) const {
        float s = 0;
        detail::check(medsam3rt_result_score(h_.get(), i, &s));
        return s;
    }
    std::array<float, 4> box(size_t i) const {
        std::array<float, 4> b{};
        detail::check(medsam3rt_result_box(h_.get(), i, b.data()));
        return b;
    }
    const uint8_t* mask(size_t i) const {
        const uint8_t* m = nullptr;
        detail::check(medsam3rt_result_mask(h_.get(), i, &m));
        return m;
    }
    int64_t area(size_t i) const {
        int64_t a = 0;
        detail::check(medsam3rt_result_area(h_.get(), i, &a));
        return a;
    }
    const uint8_t* label_map() const {
        const uint8_t* m = nullptr;
        detail::check(medsam3rt_result_label_map(h_.get(), &m));
        return m;
    }
    // preprocess, inference, postprocess in milliseconds.
    std::array<double, 3> timings_ms() const {
        std::array<double, 3> t{};
        detail::check(medsam3rt_result_timings(h_.get(), &t[0], &t[1], &t[2]));
        return t;
    }
    const medsam3rt_result* get() const noexcept { return h_.get(); }

private:
    detail::Handle<medsam3rt_result, medsam3rt_result_release> h_;
    int32_t width_ = 0, height_ = 0;
    size_t count_ = 0;
};

// One tracked object of a frame (see medsam3rt_object); `mask` lives as long as its Frame.
struct Object {
    int64_t object_id = 0;
    int32_t prompt_index = 0;
    float score = 0, tracker_score = 0;
    std::array<float, 4> box{};
    int64_t area = 0;
    const uint8_t* mask = nullptr;
};

// Stage times of one push, milliseconds (see medsam3rt_timings).
struct Timings {
    double preprocess = 0, backbone = 0, detector = 0, tracker = 0, merge = 0, postprocess = 0;
    double total() const { return preprocess + backbone + detector + tracker + merge + postprocess; }
};

class Frame {
public:
    explicit Frame(medsam3rt_frame* raw) : h_(raw) {
        detail::check(medsam3rt_frame_size(h_.get(), &width_, &height_));
        detail::check(medsam3rt_frame_count(h_.get(), &count_));
        detail::check(medsam3rt_frame_index(h_.get(), &index_));
    }
    int64_t index() const noexcept { return index_; }
    size_t size() const noexcept { return count_; }
    int32_t width() const noexcept { return width_; }
    int32_t height() const noexcept { return height_; }
    Object object(size_t i) const {
        medsam3rt_object o{};
        o.struct_size = sizeof o;
        detail::check(medsam3rt_frame_object(h_.get(), i, &o));
        return Object{o.object_id, o.prompt_index, o.score, o.tracker_score, {o.box[0], o.box[1], o.box[2], o.box[3]}, o.area, o.mask};
    }
    const uint8_t* label_map() const {
        const uint8_t* m = nullptr;
        detail::check(medsam3rt_frame_label_map(h_.get(), &m));
        return m;
    }
    Timings timings() const {
        medsam3rt_timings t{};
        t.struct_size = sizeof t;
        detail::check(medsam3rt_frame_timings(h_.get(), &t));
        return Timings{t.preprocess_ms, t.backbone_ms, t.detector_ms, t.tracker_ms, t.merge_ms, t.postprocess_ms};
    }
    const medsam3rt_frame* get() const noexcept { return h_.get(); }

private:
    detail::Handle<medsam3rt_frame, medsam3rt_frame_release> h_;
    int32_t width_ = 0, height_ = 0;
    size_t count_ = 0;
    int64_t index_ = 0;
};

// medsam3rt_stream_options; 0 / negative mean "the model's value" as in the C API.
struct StreamOptions {
    medsam3rt_stream_mode mode = MEDSAM3RT_STREAM_TRACK;
    bool nms = true;
    bool fill_holes = true;
    medsam3rt_stream_policy policy = MEDSAM3RT_POLICY_META;
    int32_t max_objects = 0;  // 0 = 16 with MEDSAM3RT_POLICY_META, the model's with MEDSAM3RT_POLICY_TRANSFORMERS
    int32_t max_cond_frames = 0;
    int32_t forget_after = 0;  // 0 = never
    double detection_threshold = -1.0;
    double new_object_threshold = -1.0;
    bool use_window = false;
    double window_low = 0.0, window_high = 0.0;
};

// A video / volume being tracked. Move-only; one thread at a time.
class Stream {
public:
    explicit Stream(medsam3rt_stream* raw) : h_(raw) {}
    Frame push(const Image& image) {
        medsam3rt_frame* raw = nullptr;
        detail::check(medsam3rt_stream_push(h_.get(), &image.desc, &raw));
        return Frame(raw);
    }
    void reset() { detail::check(medsam3rt_stream_reset(h_.get())); }
    // true when tracking, false for per-frame detection (MEDSAM3RT_STREAM_DETECT, or AUTO without tracker).
    bool tracking() const {
        int32_t t = 0;
        detail::check(medsam3rt_stream_tracking(h_.get(), &t));
        return t != 0;
    }
    int64_t frame_index() const {
        int64_t i = 0;
        detail::check(medsam3rt_stream_frame_index(h_.get(), &i));
        return i;
    }
    size_t num_objects() const {
        size_t n = 0;
        detail::check(medsam3rt_stream_num_objects(h_.get(), &n, nullptr));
        return n;
    }
    int64_t next_object_id() const {
        size_t n = 0;
        int64_t next = 0;
        detail::check(medsam3rt_stream_num_objects(h_.get(), &n, &next));
        return next;
    }
    int64_t state_bytes() const {
        int64_t b = 0;
        detail::check(medsam3rt_stream_state_bytes(h_.get(), &b));
        return b;
    }
    medsam3rt_stream* get() const noexcept { return h_.get(); }

private:
    detail::Handle<medsam3rt_stream, medsam3rt_stream_release> h_;
};

struct ModelOptions {
    std::string backend = "openvino";
    std::string device;  // "" = the backend's default
    int32_t num_threads = 0;
    medsam3rt_verify verify = MEDSAM3RT_VERIFY_HASH;
    std::string cache_dir;
};

class Model {
public:
    explicit Model(const std::string& model_dir, const ModelOptions& options = {}) {
        medsam3rt_model_options o;
        detail::check(medsam3rt_model_options_init(&o));
        o.backend = options.backend.c_str();
        o.device = options.device.empty() ? nullptr : options.device.c_str();
        o.num_threads = options.num_threads;
        o.verify = options.verify;
        o.cache_dir = options.cache_dir.empty() ? nullptr : options.cache_dir.c_str();
        medsam3rt_model* raw = nullptr;
        detail::check(medsam3rt_model_open(model_dir.c_str(), &o, &raw));
        h_ = detail::Handle<medsam3rt_model, medsam3rt_model_release>(raw);
    }
    int32_t image_size() const {
        int32_t s = 0;
        detail::check(medsam3rt_model_image_size(h_.get(), &s));
        return s;
    }
    std::string backend() const {
        const char* b = nullptr;
        detail::check(medsam3rt_model_backend(h_.get(), &b));
        return b;
    }
    std::string text_encoder_sha256() const {
        const char* s = nullptr;
        detail::check(medsam3rt_model_text_encoder_sha256(h_.get(), &s));
        return s;
    }
    Prompts load_prompts(const std::string& pack_path) const {
        medsam3rt_prompts* raw = nullptr;
        detail::check(medsam3rt_prompts_load(h_.get(), pack_path.c_str(), &raw));
        return Prompts(raw);
    }
    Result segment(const Prompts& prompts, const Image& image, const SegmentOptions& options = {}) {
        medsam3rt_segment_options o;
        detail::check(medsam3rt_segment_options_init(&o));
        o.min_score = options.min_score;
        o.use_window = options.use_window ? 1 : 0;
        o.window_low = options.window_low;
        o.window_high = options.window_high;
        medsam3rt_result* raw = nullptr;
        detail::check(medsam3rt_segment(h_.get(), prompts.get(), &image.desc, &o, &raw));
        return Result(raw);
    }
    // A stream for these prompts (copied: `prompts` may go away afterwards).
    Stream stream(const Prompts& prompts, const StreamOptions& options = {}) {
        medsam3rt_stream_options o;
        detail::check(medsam3rt_stream_options_init(&o));
        o.mode = options.mode;
        o.nms = options.nms ? 1 : 0;
        o.fill_holes = options.fill_holes ? 1 : 0;
        o.policy = options.policy;
        o.max_objects = options.max_objects;
        o.max_cond_frames = options.max_cond_frames;
        o.forget_after = options.forget_after;
        o.detection_threshold = options.detection_threshold;
        o.new_object_threshold = options.new_object_threshold;
        o.use_window = options.use_window ? 1 : 0;
        o.window_low = options.window_low;
        o.window_high = options.window_high;
        medsam3rt_stream* raw = nullptr;
        detail::check(medsam3rt_stream_open(h_.get(), prompts.get(), &o, &raw));
        return Stream(raw);
    }
    medsam3rt_model* get() const noexcept { return h_.get(); }

private:
    detail::Handle<medsam3rt_model, medsam3rt_model_release> h_;
};

}  // namespace medsam3rt

#endif  // MEDSAM3RT_HPP
