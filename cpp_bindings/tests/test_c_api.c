/* test_c_api.c: every C entry point with bad arguments (NULL handles and pointers, wrong
 * sizes, bad enums, missing files, corrupt manifest, tampered file, prompt pack of another
 * model), checking status codes and medsam3rt_last_error() text.
 *
 *   test_c_api                              model-free cases only (ctest)
 *   test_c_api MODEL PACK OTHER_PACK CORRUPT_DIR TAMPERED_DIR
 *                                           all cases (tests/cpp/test_cpp_bindings.py)
 *   test_c_api MODEL PACK OTHER_PACK CORRUPT_DIR TAMPERED_DIR VIDEO_MODEL VIDEO_PACK
 *                                           and the streaming cases (tests/cpp/test_cpp_bindings.py)
 *
 * Prints "case <name>: <status> <message>" for every error case (pytest compares some texts
 * with the Python runtime's), then "N passed, M failed"; exits 1 if any case failed. */
#include <medsam3rt/medsam3rt.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0, failed = 0;

static void expect(const char* name, medsam3rt_status got, medsam3rt_status want, const char* needle) {
    const char* msg = medsam3rt_last_error();
    int ok = got == want && (want == MEDSAM3RT_OK || (msg != NULL && strstr(msg, needle) != NULL));
    printf("case %s: %s %s\n", name, medsam3rt_status_name(got), want == MEDSAM3RT_OK ? "" : msg);
    if (!ok) printf("FAIL %s: want %s containing '%s'\n", name, medsam3rt_status_name(want), needle);
    ok ? ++passed : ++failed;
}

static void expect_true(const char* name, int cond) {
    if (!cond) printf("FAIL %s\n", name);
    cond ? ++passed : ++failed;
}

static void* other_thread(void* arg) {
    (void)arg;
    return (void*)(strlen(medsam3rt_last_error()) == 0 ? (void*)1 : NULL);
}

static void model_free_cases(void) {
    char want_version[32];
    snprintf(want_version, sizeof want_version, "%d.%d.%d", MEDSAM3RT_VERSION_MAJOR, MEDSAM3RT_VERSION_MINOR, MEDSAM3RT_VERSION_PATCH);
    expect_true("version matches the header", strcmp(medsam3rt_version(), want_version) == 0);
    expect_true("no error yet", strcmp(medsam3rt_last_error(), "") == 0);
    expect_true("status names", strcmp(medsam3rt_status_name(MEDSAM3RT_ERROR_MODEL), "model") == 0 &&
                                    strcmp(medsam3rt_status_name((medsam3rt_status)42), "unknown") == 0);
    medsam3rt_model* model = (medsam3rt_model*)0x1;
    medsam3rt_model_options opts;
    expect("options_init NULL", medsam3rt_model_options_init(NULL), MEDSAM3RT_ERROR_USAGE, "options is NULL");
    expect("open NULL dir", medsam3rt_model_open(NULL, NULL, &model), MEDSAM3RT_ERROR_USAGE, "model_dir is NULL");
    expect_true("open NULL dir clears the output handle", model == NULL);
    expect("open NULL output", medsam3rt_model_open("/nonexistent", NULL, NULL), MEDSAM3RT_ERROR_USAGE, "model (output) is NULL");
    expect("open missing dir", medsam3rt_model_open("/nonexistent/model", NULL, &model), MEDSAM3RT_ERROR_MODEL,
           "model directory '/nonexistent/model' does not exist");
    expect("open a file", medsam3rt_model_open("/etc/hostname", NULL, &model), MEDSAM3RT_ERROR_MODEL, "is not a directory");
    expect("open a dir without manifest", medsam3rt_model_open("/", NULL, &model), MEDSAM3RT_ERROR_MODEL, "has no manifest.json");
    pthread_t t;
    void* clean = NULL;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &clean);
    expect_true("last_error is per thread", clean != NULL && strlen(medsam3rt_last_error()) > 0);
    medsam3rt_model_options_init(&opts);
    opts.struct_size = 4;
    expect("options struct_size", medsam3rt_model_open("/", &opts, &model), MEDSAM3RT_ERROR_USAGE, "struct_size is 4");
    medsam3rt_model_options_init(&opts);
    opts.verify = 7;
    expect("options verify", medsam3rt_model_open("/", &opts, &model), MEDSAM3RT_ERROR_USAGE, "options.verify is 7");
    medsam3rt_model_options_init(&opts);
    opts.num_threads = -1;
    expect("options threads", medsam3rt_model_open("/", &opts, &model), MEDSAM3RT_ERROR_USAGE, "num_threads must be >= 0");
    int32_t size;
    size_t count;
    const char* text;
    const uint8_t* bytes;
    float score, box[4];
    int64_t area;
    medsam3rt_result* result = (medsam3rt_result*)0x1;
    medsam3rt_prompts* prompts = (medsam3rt_prompts*)0x1;
    expect("image_size NULL model", medsam3rt_model_image_size(NULL, &size), MEDSAM3RT_ERROR_USAGE, "model is NULL");
    expect("backend NULL model", medsam3rt_model_backend(NULL, &text), MEDSAM3RT_ERROR_USAGE, "model is NULL");
    expect("sha256 NULL model", medsam3rt_model_text_encoder_sha256(NULL, &text), MEDSAM3RT_ERROR_USAGE, "model is NULL");
    expect("prompts_load NULL model", medsam3rt_prompts_load(NULL, "x.m3pack", &prompts), MEDSAM3RT_ERROR_USAGE, "model is NULL");
    expect_true("prompts_load clears the output handle", prompts == NULL);
    expect("prompts_select NULL", medsam3rt_prompts_select(NULL, NULL, 0, &prompts), MEDSAM3RT_ERROR_USAGE, "from is NULL");
    expect("prompts_count NULL", medsam3rt_prompts_count(NULL, &count), MEDSAM3RT_ERROR_USAGE, "prompts is NULL");
    expect("prompts_text NULL", medsam3rt_prompts_text(NULL, 0, &text), MEDSAM3RT_ERROR_USAGE, "prompts is NULL");
    expect("segment_options_init NULL", medsam3rt_segment_options_init(NULL), MEDSAM3RT_ERROR_USAGE, "options is NULL");
    expect("segment NULL model", medsam3rt_segment(NULL, NULL, NULL, NULL, &result), MEDSAM3RT_ERROR_USAGE, "model is NULL");
    expect_true("segment clears the output handle", result == NULL);
    expect("segment NULL output", medsam3rt_segment(NULL, NULL, NULL, NULL, NULL), MEDSAM3RT_ERROR_USAGE, "result (output) is NULL");
    expect("result_count NULL", medsam3rt_result_count(NULL, &count), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_size NULL", medsam3rt_result_size(NULL, &size, &size), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_score NULL", medsam3rt_result_score(NULL, 0, &score), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_box NULL", medsam3rt_result_box(NULL, 0, box), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_mask NULL", medsam3rt_result_mask(NULL, 0, &bytes), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_area NULL", medsam3rt_result_area(NULL, 0, &area), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_label_map NULL", medsam3rt_result_label_map(NULL, &bytes), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    expect("result_timings NULL", medsam3rt_result_timings(NULL, NULL, NULL, NULL), MEDSAM3RT_ERROR_USAGE, "result is NULL");
    medsam3rt_model_release(NULL);
    medsam3rt_prompts_release(NULL);
    medsam3rt_result_release(NULL);
    expect_true("release NULL is a no-op", 1);

    /* streaming entry points without a model */
    medsam3rt_stream* stream = (medsam3rt_stream*)0x1;
    medsam3rt_frame* frame = (medsam3rt_frame*)0x1;
    medsam3rt_stream_options so;
    medsam3rt_object object;
    medsam3rt_timings timings;
    int64_t i64;
    expect("stream_options_init NULL", medsam3rt_stream_options_init(NULL), MEDSAM3RT_ERROR_USAGE, "options is NULL");
    expect("stream_options_init", medsam3rt_stream_options_init(&so), MEDSAM3RT_OK, "");
    expect_true("stream options defaults", so.struct_size == sizeof so && so.nms == 1 && so.fill_holes == 1 && so.max_objects == 0 &&
                                               so.forget_after == 0 && so.detection_threshold < 0 && so.new_object_threshold < 0 &&
                                               so.policy == MEDSAM3RT_POLICY_META);
    expect("stream_open NULL model", medsam3rt_stream_open(NULL, NULL, NULL, &stream), MEDSAM3RT_ERROR_USAGE, "model is NULL");
    expect_true("stream_open clears the output handle", stream == NULL);
    expect("stream_open NULL output", medsam3rt_stream_open(NULL, NULL, NULL, NULL), MEDSAM3RT_ERROR_USAGE, "stream (output) is NULL");
    expect("stream_push NULL stream", medsam3rt_stream_push(NULL, NULL, &frame), MEDSAM3RT_ERROR_USAGE, "stream is NULL");
    expect_true("stream_push clears the output handle", frame == NULL);
    expect("stream_push NULL output", medsam3rt_stream_push(NULL, NULL, NULL), MEDSAM3RT_ERROR_USAGE, "frame (output) is NULL");
    expect("stream_push made-up handle", medsam3rt_stream_push((medsam3rt_stream*)0x1234, NULL, &frame), MEDSAM3RT_ERROR_USAGE,
           "stream is not open");
    expect("stream_reset NULL", medsam3rt_stream_reset(NULL), MEDSAM3RT_ERROR_USAGE, "stream is NULL");
    expect("stream_frame_index NULL", medsam3rt_stream_frame_index(NULL, &i64), MEDSAM3RT_ERROR_USAGE, "stream is NULL");
    expect("stream_num_objects NULL", medsam3rt_stream_num_objects(NULL, &count, NULL), MEDSAM3RT_ERROR_USAGE, "stream is NULL");
    expect("stream_state_bytes NULL", medsam3rt_stream_state_bytes(NULL, &i64), MEDSAM3RT_ERROR_USAGE, "stream is NULL");
    expect("frame_index NULL", medsam3rt_frame_index(NULL, &i64), MEDSAM3RT_ERROR_USAGE, "frame is NULL");
    expect("frame_size NULL", medsam3rt_frame_size(NULL, &size, &size), MEDSAM3RT_ERROR_USAGE, "frame is NULL");
    expect("frame_count NULL", medsam3rt_frame_count(NULL, &count), MEDSAM3RT_ERROR_USAGE, "frame is NULL");
    expect("frame_object NULL", medsam3rt_frame_object(NULL, 0, &object), MEDSAM3RT_ERROR_USAGE, "frame is NULL");
    expect("frame_label_map NULL", medsam3rt_frame_label_map(NULL, &bytes), MEDSAM3RT_ERROR_USAGE, "frame is NULL");
    expect("frame_timings NULL", medsam3rt_frame_timings(NULL, &timings), MEDSAM3RT_ERROR_USAGE, "frame is NULL");
    medsam3rt_stream_release(NULL);
    medsam3rt_stream_release((medsam3rt_stream*)0x1234);
    medsam3rt_frame_release(NULL);
    expect_true("stream and frame release of NULL / unknown handles are no-ops", 1);
}

static uint8_t video_pixels[48 * 64 * 3];

static void stream_cases(const char* image_model_dir, const char* image_pack, const char* video_dir, const char* video_pack) {
    medsam3rt_model *video = NULL, *image_model = NULL;
    medsam3rt_prompts *prompts = NULL, *image_prompts = NULL, *none = NULL;
    medsam3rt_stream* stream = NULL;
    medsam3rt_frame* frame = NULL;
    medsam3rt_stream_options so;
    expect("open video model", medsam3rt_model_open(video_dir, NULL, &video), MEDSAM3RT_OK, "");
    expect("open image model", medsam3rt_model_open(image_model_dir, NULL, &image_model), MEDSAM3RT_OK, "");
    if (video == NULL || image_model == NULL) return;
    expect("video pack", medsam3rt_prompts_load(video, video_pack, &prompts), MEDSAM3RT_OK, "");
    expect("image pack", medsam3rt_prompts_load(image_model, image_pack, &image_prompts), MEDSAM3RT_OK, "");
    if (prompts == NULL || image_prompts == NULL) return;
    expect("stream on an export without tracker", medsam3rt_stream_open(image_model, image_prompts, NULL, &stream), MEDSAM3RT_ERROR_MODEL,
           "this export has no tracker graphs (exported from a Sam3Model); export a Sam3VideoModel checkpoint");
    expect("stream with a pack of another model", medsam3rt_stream_open(video, image_prompts, NULL, &stream), MEDSAM3RT_ERROR_MODEL,
           "these prompts were made for another model");
    expect("stream NULL prompts", medsam3rt_stream_open(video, NULL, NULL, &stream), MEDSAM3RT_ERROR_USAGE, "prompts is NULL");
    expect("select none", medsam3rt_prompts_select(prompts, NULL, 0, &none), MEDSAM3RT_OK, "");
    expect("stream without prompts", medsam3rt_stream_open(video, none, NULL, &stream), MEDSAM3RT_ERROR_USAGE, "no prompt given");
    medsam3rt_prompts_release(none);
    medsam3rt_stream_options_init(&so);
    so.struct_size = 8;
    expect("stream options struct_size", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_USAGE,
           "medsam3rt_stream_options.struct_size is 8");
    medsam3rt_stream_options_init(&so);
    so.max_objects = -2;
    expect("stream max_objects", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_USAGE,
           "max_objects must be >= 1 (or 0 for the default), got -2");
    medsam3rt_stream_options_init(&so);
    so.policy = 7;
    expect("stream policy", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_USAGE,
           "options.policy is 7; use MEDSAM3RT_POLICY_META or MEDSAM3RT_POLICY_TRANSFORMERS");
    /* a caller built against the first version (no `policy` field) opens streams with the default policy */
    medsam3rt_stream_options_init(&so);
    so.struct_size = (uint32_t)offsetof(medsam3rt_stream_options, policy);
    so.policy = 7; /* beyond the caller's struct: never read */
    expect("stream first-version options", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_OK, "");
    medsam3rt_stream_release(stream);
    stream = NULL;
    medsam3rt_stream_options_init(&so);
    so.forget_after = -1;
    expect("stream forget_after", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_USAGE, "forget_after must be >= 1");
    medsam3rt_stream_options_init(&so);
    so.detection_threshold = 1.5;
    expect("stream detection_threshold", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_USAGE,
           "detection_threshold must be within 0..1 (or negative for the model's), got 1.5");
    medsam3rt_stream_options_init(&so);
    so.new_object_threshold = strtod("nan", NULL);
    expect("stream new_object_threshold NaN", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_USAGE,
           "new_object_threshold must be within 0..1");
    medsam3rt_stream_options_init(&so);
    so.use_window = 1; so.window_low = 5; so.window_high = 5;
    expect("stream window", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_ERROR_INPUT, "intensity window needs finite low < high");
    medsam3rt_stream_options_init(&so);
    so.detection_threshold = 0.24;
    so.new_object_threshold = 0.25;
    expect("stream_open", medsam3rt_stream_open(video, prompts, &so, &stream), MEDSAM3RT_OK, "");
    if (stream == NULL) return;
    /* the stream keeps the model's graphs and its own copy of the prompts */
    medsam3rt_prompts_release(prompts);
    medsam3rt_model_release(video);
    for (int i = 0; i < (int)sizeof video_pixels; ++i) video_pixels[i] = (uint8_t)((i * 13) ^ (i >> 5));
    medsam3rt_image image = {video_pixels, 64, 48, 0, MEDSAM3RT_RGB, MEDSAM3RT_UINT8}, bad = image;
    expect("push NULL image", medsam3rt_stream_push(stream, NULL, &frame), MEDSAM3RT_ERROR_USAGE, "image is NULL");
    bad.height = 1;
    expect("push too small", medsam3rt_stream_push(stream, &bad, &frame), MEDSAM3RT_ERROR_INPUT, "image is 1 x 64 pixels; at least 2 x 2 is needed");
    bad = image; bad.stride_bytes = 10;
    expect("push stride too small", medsam3rt_stream_push(stream, &bad, &frame), MEDSAM3RT_ERROR_INPUT, "stride_bytes 10 is less than one row");
    bad = image; bad.format = 0;
    expect("push bad format", medsam3rt_stream_push(stream, &bad, &frame), MEDSAM3RT_ERROR_INPUT, "image format 0 is not supported");
    int64_t index = -1, next_id = -1, bytes = -1;
    size_t count = 99;
    expect("frame index before any push", medsam3rt_stream_frame_index(stream, &index), MEDSAM3RT_OK, "");
    expect_true("bad pushes do not advance the stream", index == 0);
    expect("push after model release", medsam3rt_stream_push(stream, &image, &frame), MEDSAM3RT_OK, "");
    if (frame == NULL) return;
    int32_t w = 0, h = 0;
    expect("frame_size", medsam3rt_frame_size(frame, &w, &h), MEDSAM3RT_OK, "");
    expect_true("frame is image-sized", w == 64 && h == 48);
    expect("frame_count", medsam3rt_frame_count(frame, &count), MEDSAM3RT_OK, "");
    medsam3rt_object object;
    memset(&object, 0, sizeof object);
    object.struct_size = 4;
    expect("frame_object struct_size", medsam3rt_frame_object(frame, 0, &object), count ? MEDSAM3RT_ERROR_USAGE : MEDSAM3RT_ERROR_USAGE,
           count ? "medsam3rt_object.struct_size is 4" : "out of range");
    object.struct_size = sizeof object;
    expect("frame_object out of range", medsam3rt_frame_object(frame, count, &object), MEDSAM3RT_ERROR_USAGE, "object index");
    expect("frame_object NULL output", medsam3rt_frame_object(frame, 0, NULL), MEDSAM3RT_ERROR_USAGE, "object (output) is NULL");
    medsam3rt_timings timings;
    memset(&timings, 0, sizeof timings);
    timings.struct_size = 3;
    expect("frame_timings struct_size", medsam3rt_frame_timings(frame, &timings), MEDSAM3RT_ERROR_USAGE, "medsam3rt_timings.struct_size is 3");
    timings.struct_size = sizeof timings;
    expect("frame_timings", medsam3rt_frame_timings(frame, &timings), MEDSAM3RT_OK, "");
    expect_true("timings are filled", timings.backbone_ms > 0 && timings.detector_ms > 0 && timings.struct_size == sizeof timings);
    const uint8_t* labels = NULL;
    expect("frame_label_map", medsam3rt_frame_label_map(frame, &labels), MEDSAM3RT_OK, "");
    expect("frame_label_map NULL output", medsam3rt_frame_label_map(frame, NULL), MEDSAM3RT_ERROR_USAGE, "label_map (output) is NULL");
    expect("stream_num_objects", medsam3rt_stream_num_objects(stream, &count, &next_id), MEDSAM3RT_OK, "");
    expect("stream_num_objects NULL output", medsam3rt_stream_num_objects(stream, NULL, NULL), MEDSAM3RT_ERROR_USAGE, "count (output) is NULL");
    expect("stream_state_bytes", medsam3rt_stream_state_bytes(stream, &bytes), MEDSAM3RT_OK, "");
    expect_true("state is empty without objects and non-empty with them", (count == 0) == (bytes == 0));
    expect("stream_frame_index", medsam3rt_stream_frame_index(stream, &index), MEDSAM3RT_OK, "");
    expect_true("frame index advanced", index == 1);
    expect("stream_reset", medsam3rt_stream_reset(stream), MEDSAM3RT_OK, "");
    medsam3rt_stream_frame_index(stream, &index);
    medsam3rt_stream_num_objects(stream, &count, &next_id);
    expect_true("reset forgets everything", index == 0 && count == 0 && next_id == 0);
    medsam3rt_stream_release(stream);
    /* the frame outlives its stream */
    expect("frame after stream release", medsam3rt_frame_label_map(frame, &labels), MEDSAM3RT_OK, "");
    medsam3rt_frame_release(frame);
    frame = (medsam3rt_frame*)0x1;
    expect("push to a released stream", medsam3rt_stream_push(stream, &image, &frame), MEDSAM3RT_ERROR_USAGE,
           "stream is not open (it was released, or is not a stream handle)");
    expect_true("push to a released stream clears the output handle", frame == NULL);
    expect("reset a released stream", medsam3rt_stream_reset(stream), MEDSAM3RT_ERROR_USAGE, "stream is not open");
    expect("state of a released stream", medsam3rt_stream_state_bytes(stream, &bytes), MEDSAM3RT_ERROR_USAGE, "stream is not open");
    medsam3rt_stream_release(stream); /* twice: a no-op */
    expect_true("double release is a no-op", 1);
    medsam3rt_prompts_release(image_prompts);
    medsam3rt_model_release(image_model);
}

static void model_cases(char** argv) {
    const char *dir = argv[1], *pack = argv[2], *other_pack = argv[3], *corrupt = argv[4], *tampered = argv[5];
    medsam3rt_model* model = NULL;
    medsam3rt_model_options opts;
    medsam3rt_model_options_init(&opts);
    opts.backend = "tensorflow";
    expect("unknown backend", medsam3rt_model_open(dir, &opts, &model), MEDSAM3RT_ERROR_USAGE, "unknown backend 'tensorflow'");
    medsam3rt_model_options_init(&opts);
    opts.device = "TPU";
    expect("unknown device", medsam3rt_model_open(dir, &opts, &model), MEDSAM3RT_ERROR_USAGE, "OpenVINO device 'TPU' is not one of");
    expect("corrupt manifest", medsam3rt_model_open(corrupt, NULL, &model), MEDSAM3RT_ERROR_MODEL, "is not valid JSON");
    expect("tampered file", medsam3rt_model_open(tampered, NULL, &model), MEDSAM3RT_ERROR_MODEL, "the file was tampered with or corrupted");
    medsam3rt_model_options_init(&opts);
    opts.verify = MEDSAM3RT_VERIFY_SIZE;
    expect("tampered file, sizes only", medsam3rt_model_open(tampered, &opts, &model), MEDSAM3RT_OK, "");
    medsam3rt_model_release(model);
    model = NULL;
    expect("open", medsam3rt_model_open(dir, NULL, &model), MEDSAM3RT_OK, "");
    if (model == NULL) return;
    int32_t side = 0;
    const char* text = NULL;
    expect("image_size", medsam3rt_model_image_size(model, &side), MEDSAM3RT_OK, "");
    expect_true("image_size > 0", side > 0);
    expect("image_size NULL output", medsam3rt_model_image_size(model, NULL), MEDSAM3RT_ERROR_USAGE, "image_size (output) is NULL");
    expect("backend", medsam3rt_model_backend(model, &text), MEDSAM3RT_OK, "");
    expect_true("backend is openvino", text && strcmp(text, "openvino") == 0);
    medsam3rt_prompts *prompts = NULL, *picked = NULL;
    expect("pack missing", medsam3rt_prompts_load(model, "/nonexistent/p.m3pack", &prompts), MEDSAM3RT_ERROR_MODEL, "does not exist");
    expect("pack is a directory", medsam3rt_prompts_load(model, dir, &prompts), MEDSAM3RT_ERROR_MODEL, "is a directory");
    char manifest[4096];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", dir);
    expect("pack not a pack", medsam3rt_prompts_load(model, manifest, &prompts), MEDSAM3RT_ERROR_MODEL, "(bad magic)");
    expect("pack of another model", medsam3rt_prompts_load(model, other_pack, &prompts), MEDSAM3RT_ERROR_MODEL,
           "was made for another model");
    expect("pack NULL path", medsam3rt_prompts_load(model, NULL, &prompts), MEDSAM3RT_ERROR_USAGE, "pack_path is NULL");
    expect("pack", medsam3rt_prompts_load(model, pack, &prompts), MEDSAM3RT_OK, "");
    if (prompts == NULL) return;
    size_t count = 0;
    expect("prompts_count", medsam3rt_prompts_count(prompts, &count), MEDSAM3RT_OK, "");
    expect("prompts_text out of range", medsam3rt_prompts_text(prompts, count, &text), MEDSAM3RT_ERROR_USAGE, "out of range");
    const char* unknown[] = {"spleen"};
    expect("select unknown", medsam3rt_prompts_select(prompts, unknown, 1, &picked), MEDSAM3RT_ERROR_USAGE, "prompt 'spleen' is not in");
    expect("select NULL names", medsam3rt_prompts_select(prompts, NULL, 1, &picked), MEDSAM3RT_ERROR_USAGE, "names is NULL");
    expect("select empty", medsam3rt_prompts_select(prompts, NULL, 0, &picked), MEDSAM3RT_OK, "");

    enum { W = 37, H = 29, STRIDE = W * 3 + 5 };
    static uint8_t pixels[H * STRIDE];
    for (int i = 0; i < H * STRIDE; ++i) pixels[i] = (uint8_t)(i * 7);
    medsam3rt_image image = {pixels, W, H, STRIDE, MEDSAM3RT_RGB, MEDSAM3RT_UINT8}, bad;
    medsam3rt_result* result = NULL;
    expect("segment with no prompts", medsam3rt_segment(model, picked, &image, NULL, &result), MEDSAM3RT_ERROR_USAGE, "no prompt given");
    medsam3rt_prompts_release(picked);
    expect("segment NULL prompts", medsam3rt_segment(model, NULL, &image, NULL, &result), MEDSAM3RT_ERROR_USAGE, "prompts is NULL");
    expect("segment NULL image", medsam3rt_segment(model, prompts, NULL, NULL, &result), MEDSAM3RT_ERROR_USAGE, "image is NULL");
    bad = image; bad.data = NULL;
    expect("image data NULL", medsam3rt_segment(model, prompts, &bad, NULL, &result), MEDSAM3RT_ERROR_USAGE, "image data is NULL");
    bad = image; bad.width = 1;
    expect("image too small", medsam3rt_segment(model, prompts, &bad, NULL, &result), MEDSAM3RT_ERROR_INPUT,
           "image is 29 x 1 pixels; at least 2 x 2 is needed");
    bad = image; bad.width = 20000; bad.height = 20000;
    expect("image too large", medsam3rt_segment(model, prompts, &bad, NULL, &result), MEDSAM3RT_ERROR_INPUT,
           "over the 268,435,456-pixel limit");
    bad = image; bad.stride_bytes = W * 3 - 1;
    expect("image stride too small", medsam3rt_segment(model, prompts, &bad, NULL, &result), MEDSAM3RT_ERROR_INPUT,
           "stride_bytes 110 is less than one row");
    bad = image; bad.format = 9;
    expect("image format", medsam3rt_segment(model, prompts, &bad, NULL, &result), MEDSAM3RT_ERROR_INPUT, "image format 9 is not supported");
    bad = image; bad.type = 3;
    expect("image type", medsam3rt_segment(model, prompts, &bad, NULL, &result), MEDSAM3RT_ERROR_INPUT, "pixel type 3 is not supported");
    medsam3rt_segment_options so;
    medsam3rt_segment_options_init(&so);
    so.min_score = 1.5f;
    expect("min_score", medsam3rt_segment(model, prompts, &image, &so, &result), MEDSAM3RT_ERROR_USAGE, "min_score must be within 0..1, got 1.5");
    medsam3rt_segment_options_init(&so);
    so.use_window = 1; so.window_low = 400; so.window_high = -1000;
    expect("window", medsam3rt_segment(model, prompts, &image, &so, &result), MEDSAM3RT_ERROR_INPUT,
           "intensity window needs finite low < high, got (400.0, -1000.0)");
    so.struct_size = 0;
    expect("segment options struct_size", medsam3rt_segment(model, prompts, &image, &so, &result), MEDSAM3RT_ERROR_USAGE, "struct_size is 0");
    expect("segment", medsam3rt_segment(model, prompts, &image, NULL, &result), MEDSAM3RT_OK, "");
    if (result == NULL) return;
    int32_t w = 0, h = 0;
    size_t n = 0;
    const uint8_t* mask = NULL;
    float box[4];
    expect("result_size", medsam3rt_result_size(result, &w, &h), MEDSAM3RT_OK, "");
    expect_true("result is image-sized", w == W && h == H);
    expect("result_count", medsam3rt_result_count(result, &n), MEDSAM3RT_OK, "");
    expect_true("one result per prompt", n == count);
    expect("result_mask out of range", medsam3rt_result_mask(result, n, &mask), MEDSAM3RT_ERROR_USAGE, "out of range");
    expect("result_box out of range", medsam3rt_result_box(result, n + 100, box), MEDSAM3RT_ERROR_USAGE, "out of range");
    expect("result_mask NULL output", medsam3rt_result_mask(result, 0, NULL), MEDSAM3RT_ERROR_USAGE, "mask (output) is NULL");
    expect("result_mask", medsam3rt_result_mask(result, 0, &mask), MEDSAM3RT_OK, "");
    medsam3rt_result_release(result);

    medsam3rt_model* other = NULL;
    medsam3rt_prompts* foreign = NULL;
    medsam3rt_model_options_init(&opts);
    opts.verify = MEDSAM3RT_VERIFY_SIZE;
    if (medsam3rt_model_open(tampered, &opts, &other) == MEDSAM3RT_OK) {
        /* The tampered copy has the same text encoder: its prompts are accepted by `model`. */
        expect("prompts of a same-encoder model", medsam3rt_prompts_load(other, pack, &foreign), MEDSAM3RT_OK, "");
        expect("segment with them", medsam3rt_segment(model, foreign, &image, NULL, &result), MEDSAM3RT_OK, "");
        medsam3rt_result_release(result);
        medsam3rt_prompts_release(foreign);
        medsam3rt_model_release(other);
    }
    medsam3rt_prompts_release(prompts);
    medsam3rt_model_release(model);
}

int main(int argc, char** argv) {
    model_free_cases();
    if (argc == 6 || argc == 8) {
        model_cases(argv);
        if (argc == 8) stream_cases(argv[1], argv[2], argv[6], argv[7]);
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [MODEL PACK OTHER_PACK CORRUPT_DIR TAMPERED_DIR [VIDEO_MODEL VIDEO_PACK]]\n", argv[0]);
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
