/* segment_image.c: segment a PGM/PPM image (8- or 16-bit) for the prompts of a prompt pack
 * and write the label map as a PGM. Usage: segment_image MODEL_DIR PACK IMAGE LABELS.pgm */
#include <medsam3rt/medsam3rt.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call) do { medsam3rt_status s_ = (call); if (s_ != MEDSAM3RT_OK) { \
    fprintf(stderr, "error: %s\n", medsam3rt_last_error()); return (int)s_; } } while (0)

int main(int argc, char** argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s MODEL_DIR PACK IMAGE.pgm|.ppm LABELS.pgm\n", argv[0]); return 2; }
    FILE* f = fopen(argv[3], "rb");
    char magic[3] = ""; int w = 0, h = 0, maxval = 0;
    if (!f || fscanf(f, "%2s %d %d %d", magic, &w, &h, &maxval) != 4 || fgetc(f) == EOF || magic[0] != 'P' ||
        (magic[1] != '5' && magic[1] != '6') || w < 1 || h < 1 || maxval < 1 || maxval > 65535) {
        fprintf(stderr, "error: %s is not a binary PGM/PPM image\n", argv[3]); return 3; }
    int channels = magic[1] == '6' ? 3 : 1, bytes = maxval > 255 ? 2 : 1;
    size_t n = (size_t)w * h * channels * bytes;
    unsigned char* pixels = malloc(n);
    if (!pixels || fread(pixels, 1, n, f) != n) { fprintf(stderr, "error: %s is truncated\n", argv[3]); return 3; }
    fclose(f);
    for (size_t i = 0; bytes == 2 && i < n; i += 2) { unsigned char t = pixels[i]; pixels[i] = pixels[i + 1]; pixels[i + 1] = t; }  /* big-endian file, little-endian host */
    medsam3rt_model* model; medsam3rt_prompts* prompts; medsam3rt_result* result;
    CHECK(medsam3rt_model_open(argv[1], NULL, &model));
    CHECK(medsam3rt_prompts_load(model, argv[2], &prompts));
    medsam3rt_image image = {pixels, w, h, 0, channels == 3 ? MEDSAM3RT_RGB : MEDSAM3RT_GRAY, bytes == 2 ? MEDSAM3RT_UINT16 : MEDSAM3RT_UINT8};
    CHECK(medsam3rt_segment(model, prompts, &image, NULL, &result));
    size_t count; const uint8_t* labels;
    CHECK(medsam3rt_result_count(result, &count));
    for (size_t i = 0; i < count; ++i) {
        const char* text; float score, box[4]; int64_t area;
        CHECK(medsam3rt_prompts_text(prompts, i, &text)); CHECK(medsam3rt_result_score(result, i, &score));
        CHECK(medsam3rt_result_area(result, i, &area)); CHECK(medsam3rt_result_box(result, i, box));
        printf("%zu %-16s score %.4f  area %7lld px  box %.1f %.1f %.1f %.1f\n", i + 1, text, score, (long long)area, box[0], box[1], box[2], box[3]);
    }
    CHECK(medsam3rt_result_label_map(result, &labels));
    FILE* out = fopen(argv[4], "wb");
    if (!out || fprintf(out, "P5\n%d %d\n255\n", w, h) < 0 || fwrite(labels, 1, (size_t)w * h, out) != (size_t)w * h || fclose(out) != 0) {
        fprintf(stderr, "error: cannot write %s\n", argv[4]); return 1; }
    printf("wrote %s (%d x %d, 0 = background, k = k-th prompt)\n", argv[4], w, h);
    medsam3rt_result_release(result); medsam3rt_prompts_release(prompts); medsam3rt_model_release(model); free(pixels);
    return 0;
}
