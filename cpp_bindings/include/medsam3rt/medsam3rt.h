/*
 * medsam3rt.h - the stable C API of libmedsam3rt (medsam3-rt's embedding library).
 *
 * Text-prompted segmentation with an export directory written by `medsam3-rt export`, on
 * OpenVINO (or, where built with it, TensorRT). Prompts come from prompt packs written by
 * `medsam3-rt prompts pack`: the library needs no tokenizer and no text encoder. Results
 * equal the Python runtime's `medsam3_rt.load(dir).segment(image, prompts)` (same
 * manifest validation, preprocessing and post-processing).
 *
 * Conventions
 *  - Every function returns a medsam3rt_status (0 = MEDSAM3RT_OK) unless noted; on failure
 *    medsam3rt_last_error() holds a one-line message for the calling thread, and output
 *    arguments are left unchanged (handles: set to NULL).
 *  - Status values equal the exit codes of the `medsam3-rt` command line.
 *  - Handles are opaque. Whatever a *_open / *_load / *_select / medsam3rt_segment call
 *    returns is released with the matching *_release function (NULL is accepted).
 *  - Pointers returned by getters stay valid until their handle is released.
 *  - No function throws or aborts on bad arguments; NULL handles and pointers are errors.
 *  - Thread safety: a model may be used by several threads at once (medsam3rt_segment takes
 *    its own inference requests); prompts, results and frames are read-only after creation and
 *    may be shared. A stream is used by one thread at a time (several streams of one model may
 *    run in parallel). medsam3rt_last_error() is per thread.
 *  - Strings are UTF-8, paths are native (char*) paths.
 *
 * Research use only: not a medical device, not for diagnostic or treatment decisions.
 */
#ifndef MEDSAM3RT_H
#define MEDSAM3RT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(MEDSAM3RT_BUILDING)
#define MEDSAM3RT_API __declspec(dllexport)
#else
#define MEDSAM3RT_API __declspec(dllimport)
#endif
#else
#define MEDSAM3RT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MEDSAM3RT_VERSION_MAJOR 0
#define MEDSAM3RT_VERSION_MINOR 1
#define MEDSAM3RT_VERSION_PATCH 0

/* Status codes: the same numbers as the `medsam3-rt` CLI's exit codes. */
typedef enum medsam3rt_status {
    MEDSAM3RT_OK = 0,
    MEDSAM3RT_ERROR_INTERNAL = 1, /* a bug in libmedsam3rt (or out of memory): please report it */
    MEDSAM3RT_ERROR_USAGE = 2,    /* bad argument: NULL handle/pointer, index out of range, bad option */
    MEDSAM3RT_ERROR_INPUT = 3,    /* bad image: size, stride, format, pixel type */
    MEDSAM3RT_ERROR_MODEL = 4,    /* export directory, manifest, graph file, SHA-256 or prompt pack problem */
    MEDSAM3RT_ERROR_BACKEND = 5   /* backend or device unavailable */
} medsam3rt_status;

typedef struct medsam3rt_model medsam3rt_model;     /* an opened export directory on a backend */
typedef struct medsam3rt_prompts medsam3rt_prompts; /* text embeddings of P prompts, for one model */
typedef struct medsam3rt_result medsam3rt_result;   /* segmentation of one image for P prompts */
typedef struct medsam3rt_stream medsam3rt_stream;   /* a video / volume being tracked: objects and their memory */
typedef struct medsam3rt_frame medsam3rt_frame;     /* the tracked objects of one pushed frame */

/* -- library -------------------------------------------------------------------------- */

/* "MAJOR.MINOR.PATCH" of the loaded library; compare with the MEDSAM3RT_VERSION_* macros. */
MEDSAM3RT_API const char* medsam3rt_version(void);
/* The one-line message of this thread's last failed call ("" if none). Never NULL. */
MEDSAM3RT_API const char* medsam3rt_last_error(void);
/* "ok", "internal", "usage", "input", "model", "backend" (or "unknown"). Never NULL. */
MEDSAM3RT_API const char* medsam3rt_status_name(medsam3rt_status status);

/* -- model ---------------------------------------------------------------------------- */

typedef enum medsam3rt_verify {
    MEDSAM3RT_VERIFY_HASH = 0, /* size and SHA-256 of every file in the manifest (cached per process) */
    MEDSAM3RT_VERIFY_SIZE = 1, /* sizes only: fast start */
    MEDSAM3RT_VERIFY_NONE = 2
} medsam3rt_verify;

typedef struct medsam3rt_model_options {
    uint32_t struct_size;  /* sizeof(medsam3rt_model_options); set by medsam3rt_model_options_init */
    const char* backend;   /* "openvino" (default when NULL), "tensorrt" where built with it */
    const char* device;    /* backend device: OpenVINO "CPU" (default), "GPU", "GPU.1", "NPU"; TensorRT "0", "1" */
    int32_t num_threads;   /* CPU inference threads; 0 = the backend's default */
    int32_t verify;        /* a medsam3rt_verify value */
    const char* cache_dir; /* compiled-model cache (OpenVINO CACHE_DIR); NULL = none */
} medsam3rt_model_options;

/* Fill `options` with the defaults (OpenVINO, CPU, default threads, SHA-256 verification). */
MEDSAM3RT_API medsam3rt_status medsam3rt_model_options_init(medsam3rt_model_options* options);

/* Open an export directory: validate manifest.json (same rules and messages as the Python
 * runtime), check file sizes/SHA-256, load and compile the image backbone and detector.
 * `options` may be NULL (defaults). */
MEDSAM3RT_API medsam3rt_status medsam3rt_model_open(const char* model_dir, const medsam3rt_model_options* options,
                                                    medsam3rt_model** model);
MEDSAM3RT_API void medsam3rt_model_release(medsam3rt_model* model);

/* Side of the square network input (e.g. 1008); any image size is resized to it. */
MEDSAM3RT_API medsam3rt_status medsam3rt_model_image_size(const medsam3rt_model* model, int32_t* image_size);
/* The backend the model runs on, e.g. "openvino". */
MEDSAM3RT_API medsam3rt_status medsam3rt_model_backend(const medsam3rt_model* model, const char** backend);
/* SHA-256 (hex) of the text encoder graph: prompt packs are keyed by it. */
MEDSAM3RT_API medsam3rt_status medsam3rt_model_text_encoder_sha256(const medsam3rt_model* model, const char** sha256);

/* -- prompts -------------------------------------------------------------------------- */

/* Load a prompt pack (`medsam3-rt prompts pack MODEL -p ... -o FILE`). A pack made for another
 * model (different text encoder) is refused with MEDSAM3RT_ERROR_MODEL. */
MEDSAM3RT_API medsam3rt_status medsam3rt_prompts_load(const medsam3rt_model* model, const char* pack_path,
                                                      medsam3rt_prompts** prompts);
/* A new prompt set with the named prompts of `from`, in the given order (duplicates allowed).
 * Names match like the Python runtime's cache keys: case (ASCII) and repeated whitespace are
 * ignored; other characters must match the packed prompt. */
MEDSAM3RT_API medsam3rt_status medsam3rt_prompts_select(const medsam3rt_prompts* from, const char* const* names, size_t count,
                                                        medsam3rt_prompts** prompts);
MEDSAM3RT_API medsam3rt_status medsam3rt_prompts_count(const medsam3rt_prompts* prompts, size_t* count);
/* The prompt text as it was packed (e.g. "Fetal head"). */
MEDSAM3RT_API medsam3rt_status medsam3rt_prompts_text(const medsam3rt_prompts* prompts, size_t index, const char** text);
MEDSAM3RT_API void medsam3rt_prompts_release(medsam3rt_prompts* prompts);

/* -- segmentation --------------------------------------------------------------------- */

typedef enum medsam3rt_pixel_format {
    MEDSAM3RT_GRAY = 1, /* 1 channel, repeated to RGB */
    MEDSAM3RT_RGB = 2,
    MEDSAM3RT_BGR = 3,  /* OpenCV's order */
    MEDSAM3RT_RGBA = 4, /* alpha is ignored */
    MEDSAM3RT_BGRA = 5
} medsam3rt_pixel_format;

typedef enum medsam3rt_pixel_type {
    MEDSAM3RT_UINT8 = 1, /* used as is (0..255), unless a window is given */
    MEDSAM3RT_UINT16 = 2 /* native byte order; mapped to 0..255 by the window, else by the image's min..max */
} medsam3rt_pixel_type;

/* A borrowed image: read in place (no copy), never modified or kept after the call. */
typedef struct medsam3rt_image {
    const void* data;     /* first pixel of the top row */
    int32_t width;        /* pixels; at least 2, width * height at most 2^28 */
    int32_t height;
    int64_t stride_bytes; /* bytes from one row start to the next; 0 = tightly packed */
    int32_t format;       /* a medsam3rt_pixel_format value */
    int32_t type;         /* a medsam3rt_pixel_type value */
} medsam3rt_image;

typedef struct medsam3rt_segment_options {
    uint32_t struct_size; /* sizeof(medsam3rt_segment_options); set by medsam3rt_segment_options_init */
    float min_score;      /* 0..1: masks of prompts scoring below are emptied (scores still reported); default 0 */
    int32_t use_window;   /* nonzero: map [window_low, window_high] to 0..255 (values clipped), any pixel type */
    double window_low;
    double window_high;
} medsam3rt_segment_options;

MEDSAM3RT_API medsam3rt_status medsam3rt_segment_options_init(medsam3rt_segment_options* options);

/* Segment every prompt of `prompts` in `image` (paper protocol: the top-1 query per prompt).
 * `options` may be NULL (defaults). */
MEDSAM3RT_API medsam3rt_status medsam3rt_segment(medsam3rt_model* model, const medsam3rt_prompts* prompts, const medsam3rt_image* image,
                                                 const medsam3rt_segment_options* options, medsam3rt_result** result);

/* -- results -------------------------------------------------------------------------- */

/* Number of prompts P (masks, scores and boxes are indexed 0..P-1, in prompt order). */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_count(const medsam3rt_result* result, size_t* count);
/* Size of the masks and the label map: the input image's. */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_size(const medsam3rt_result* result, int32_t* width, int32_t* height);
/* sigmoid(logit) x sigmoid(presence) of the prompt's best query (always reported). */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_score(const medsam3rt_result* result, size_t index, float* score);
/* Its box, x0 y0 x1 y1 in input pixels. */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_box(const medsam3rt_result* result, size_t index, float box[4]);
/* Its mask: height rows of width bytes, 1 inside, 0 outside; masks of different prompts may overlap. */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_mask(const medsam3rt_result* result, size_t index, const uint8_t** mask);
/* Pixels inside the mask. */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_area(const medsam3rt_result* result, size_t index, int64_t* area);
/* height rows of width bytes: 0 background, k for the k-th prompt (1-based); overlaps go to the
 * prompt with the highest mask probability at that pixel. */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_label_map(const medsam3rt_result* result, const uint8_t** label_map);
/* Wall time of the call's stages in milliseconds: preprocessing, inference (backbone and
 * detector), post-processing. Any pointer may be NULL. */
MEDSAM3RT_API medsam3rt_status medsam3rt_result_timings(const medsam3rt_result* result, double* preprocess_ms, double* inference_ms,
                                                        double* postprocess_ms);
MEDSAM3RT_API void medsam3rt_result_release(medsam3rt_result* result);

/* -- streaming (video, live ultrasound / endoscopy, volume slices) ---------------------- */

/* The Python runtime's StreamOptions (medsam3_rt.StreamOptions); the defaults are its defaults:
 * Meta's SAM3 track management (MEDSAM3RT_POLICY_META) with NMS and hole filling. */
typedef enum medsam3rt_stream_mode {
    MEDSAM3RT_STREAM_TRACK = 0,  /* detector + tracker memory (needs an export with tracker graphs) */
    MEDSAM3RT_STREAM_DETECT = 1, /* every frame on its own: top-1 query per prompt, object id = prompt index */
    MEDSAM3RT_STREAM_AUTO = 2    /* TRACK when the export has tracker graphs, else DETECT */
} medsam3rt_stream_mode;

/* Track management rules (StreamOptions.policy). */
typedef enum medsam3rt_stream_policy {
    MEDSAM3RT_POLICY_META = 0,        /* Meta's SAM3 video rules: young tracks that stay unmatched or duplicate an older
                                         one are removed (hot start) and hidden; adding objects does not re-encode the
                                         others' memory; at the cap a stale track (empty, or keep-alive <= 0) makes room
                                         for a confident new detection. Outputs are causal (no held-back frames). */
    MEDSAM3RT_POLICY_TRANSFORMERS = 1 /* transformers' Sam3VideoModel in streaming mode: no removal, new detections
                                         beyond the cap dropped */
} medsam3rt_stream_policy;

typedef struct medsam3rt_stream_options {
    uint32_t struct_size;        /* sizeof(medsam3rt_stream_options); set by medsam3rt_stream_options_init */
    int32_t mode;                /* a medsam3rt_stream_mode value; default MEDSAM3RT_STREAM_TRACK */
    int32_t nms;                 /* nonzero (default): mask NMS among each prompt's detections */
    int32_t fill_holes;          /* nonzero (default): fill small holes, remove small sprinkles */
    int32_t max_objects;         /* cap on tracked objects; 0 (default) = 16 with MEDSAM3RT_POLICY_META,
                                    the model's max_num_objects with MEDSAM3RT_POLICY_TRANSFORMERS */
    int32_t max_cond_frames;     /* conditioning frames kept per object; 0 = the model's max_cond_frame_num */
    int32_t forget_after;        /* drop an object after this many consecutive empty frames; 0 = never */
    double detection_threshold;  /* 0..1: a detection counts above it (DETECT: a prompt's mask is kept from it on);
                                    negative (default) = the model's */
    double new_object_threshold; /* 0..1: an unmatched detection starts an object; negative = the model's */
    int32_t use_window;          /* nonzero: map [window_low, window_high] to 0..255, as in segment */
    double window_low;
    double window_high;
    /* -- added after the first version: callers whose struct_size ends before a field get its default -- */
    int32_t policy;              /* a medsam3rt_stream_policy value; default MEDSAM3RT_POLICY_META */
} medsam3rt_stream_options;

MEDSAM3RT_API medsam3rt_status medsam3rt_stream_options_init(medsam3rt_stream_options* options);

/* Start a stream on `model` for the prompts of `prompts` (copied: the prompts may be released
 * afterwards). TRACK needs an export with tracker graphs (a Sam3VideoModel checkpoint); prompts
 * made for another model are refused (MEDSAM3RT_ERROR_MODEL). The stream keeps what it needs of the
 * model: `model` may be released before its streams. `options` may be NULL (defaults).
 * Stream handles are checked: calls with a released stream fail with MEDSAM3RT_ERROR_USAGE. */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_open(medsam3rt_model* model, const medsam3rt_prompts* prompts,
                                                     const medsam3rt_stream_options* options, medsam3rt_stream** stream);
/* Segment and track the next frame (same image rules as medsam3rt_segment; read in place).
 * Equals the Python runtime's Stream.push: the same object ids, masks and label map. */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_push(medsam3rt_stream* stream, const medsam3rt_image* image, medsam3rt_frame** frame);
/* Forget every object and start a new video (frame index and object ids restart at 0). */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_reset(medsam3rt_stream* stream);
/* 1 if the stream tracks (MEDSAM3RT_STREAM_TRACK, or AUTO on an export with tracker graphs),
 * 0 if it segments each frame on its own (MEDSAM3RT_STREAM_DETECT). */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_tracking(const medsam3rt_stream* stream, int32_t* tracking);
/* Index the next pushed frame gets. */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_frame_index(const medsam3rt_stream* stream, int64_t* frame_index);
/* Objects currently tracked (shown or not) and the id the next new object will get. */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_num_objects(const medsam3rt_stream* stream, size_t* count, int64_t* next_object_id);
/* Bytes held by the objects' memory banks (object pointers and bfloat16 spatial memories);
 * bounded per object, whatever the number of frames. */
MEDSAM3RT_API medsam3rt_status medsam3rt_stream_state_bytes(const medsam3rt_stream* stream, int64_t* bytes);
MEDSAM3RT_API void medsam3rt_stream_release(medsam3rt_stream* stream);

/* One object of a frame. The caller sets struct_size (sizeof(medsam3rt_object)); fields
 * beyond it are not written. */
typedef struct medsam3rt_object {
    uint32_t struct_size;
    int64_t object_id;      /* stable within the stream, never reused; objects come by ascending id */
    int32_t prompt_index;   /* 0-based index into the stream's prompts */
    float score;            /* detection score when the object was first found */
    float tracker_score;    /* this frame's tracker confidence (the detection score on its first frame) */
    float box[4];           /* x0 y0 x1 y1, inclusive pixel indices around the mask (zeros if empty) */
    int64_t area;           /* pixels in the mask */
    const uint8_t* mask;    /* height rows of width bytes, 1 inside; objects of one prompt never overlap */
} medsam3rt_object;

/* Stage times of a push in milliseconds. The caller sets struct_size (sizeof(medsam3rt_timings)). */
typedef struct medsam3rt_timings {
    uint32_t struct_size;
    double preprocess_ms;
    double backbone_ms;
    double detector_ms;
    double tracker_ms;     /* tracker step of the tracked objects */
    double merge_ms;       /* association, new objects and memory encoding */
    double postprocess_ms; /* masks at input size, non-overlap, boxes, label map */
} medsam3rt_timings;

MEDSAM3RT_API medsam3rt_status medsam3rt_frame_index(const medsam3rt_frame* frame, int64_t* frame_index);
/* Size of the masks and the label map: the pushed image's. */
MEDSAM3RT_API medsam3rt_status medsam3rt_frame_size(const medsam3rt_frame* frame, int32_t* width, int32_t* height);
/* Number of objects shown in this frame (objects with an empty mask are left out). */
MEDSAM3RT_API medsam3rt_status medsam3rt_frame_count(const medsam3rt_frame* frame, size_t* count);
MEDSAM3RT_API medsam3rt_status medsam3rt_frame_object(const medsam3rt_frame* frame, size_t index, medsam3rt_object* object);
/* height rows of width bytes: 0 background, k for the k-th prompt (1-based), from the object
 * with the highest mask probability at that pixel. */
MEDSAM3RT_API medsam3rt_status medsam3rt_frame_label_map(const medsam3rt_frame* frame, const uint8_t** label_map);
MEDSAM3RT_API medsam3rt_status medsam3rt_frame_timings(const medsam3rt_frame* frame, medsam3rt_timings* timings);
MEDSAM3RT_API void medsam3rt_frame_release(medsam3rt_frame* frame);

#ifdef __cplusplus
}
#endif

#endif /* MEDSAM3RT_H */
