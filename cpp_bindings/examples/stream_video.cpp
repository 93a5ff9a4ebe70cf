// stream_video: track the prompts of a pack through a video, frame by frame (C++ wrapper).
//
//   stream_video MODEL PACK INPUT [OUTPUT_DIR] [-p PROMPT]... [--mode track|detect|auto]
//                [--policy meta|transformers] [--detection-threshold X] [--new-object-threshold X] [--max-frames N]
//
// INPUT is a video file (when built with FFmpeg's libav*) or a folder of 8/16-bit PGM/PPM
// frames, read in name order. Prints every frame's objects (stable ids) and, with OUTPUT_DIR,
// writes each frame's label map as OUTPUT_DIR/frame_NNNNN.pgm (0 background, k = k-th prompt).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "medsam3rt/medsam3rt.hpp"

#ifdef MEDSAM3RT_HAVE_LIBAV
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}
#endif

namespace {

struct Picture {
    std::vector<uint8_t> data;
    int width = 0, height = 0, channels = 0;
    bool wide = false;  // 16-bit samples (native order)
};

[[noreturn]] void fail(const std::string& message, int code = 3) {
    std::cerr << "error: " << message << "\n";
    std::exit(code);
}

// Binary PGM (P5) or PPM (P6), maxval up to 65535 (big-endian samples, as the format says).
Picture read_pnm(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string magic;
    long w = 0, h = 0, maxval = 0;
    if (!(in >> magic >> w >> h >> maxval) || (magic != "P5" && magic != "P6") || w < 2 || h < 2 || maxval < 1 || maxval > 65535) {
        fail(path + " is not a binary PGM/PPM image");
    }
    in.get();
    Picture p{{}, int(w), int(h), magic == "P5" ? 1 : 3, maxval > 255};
    const size_t samples = size_t(w) * size_t(h) * size_t(p.channels), bytes = samples * (p.wide ? 2 : 1);
    std::vector<uint8_t> raw(bytes);
    if (!in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(bytes))) fail(path + " is truncated");
    if (p.wide) {
        p.data.resize(bytes);
        for (size_t i = 0; i < samples; ++i) {
            const uint16_t v = uint16_t(raw[2 * i] << 8 | raw[2 * i + 1]);
            std::memcpy(&p.data[2 * i], &v, 2);
        }
    } else {
        p.data = std::move(raw);
    }
    return p;
}

bool has_suffix(const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Frames of a folder of .pgm / .ppm files, or of a video file.
class FrameSource {
public:
    explicit FrameSource(const std::string& path) {
        if (DIR* dir = opendir(path.c_str())) {
            while (dirent* e = readdir(dir)) {
                const std::string name = e->d_name;
                if (has_suffix(name, ".pgm") || has_suffix(name, ".ppm")) files_.push_back(path + "/" + name);
            }
            closedir(dir);
            std::sort(files_.begin(), files_.end());
            if (files_.empty()) fail(path + " has no .pgm/.ppm frames");
            return;
        }
#ifdef MEDSAM3RT_HAVE_LIBAV
        open_video(path);
#else
        fail(path + " is not a folder of PGM/PPM frames (this stream_video was built without FFmpeg's libav*, so it reads no video files)");
#endif
    }
    ~FrameSource() {
#ifdef MEDSAM3RT_HAVE_LIBAV
        sws_freeContext(sws_);
        av_frame_free(&frame_);
        av_packet_free(&packet_);
        avcodec_free_context(&decoder_);
        avformat_close_input(&format_);
#endif
    }
    FrameSource(const FrameSource&) = delete;
    FrameSource& operator=(const FrameSource&) = delete;

    bool next(Picture& out) {
        if (!files_.empty()) {
            if (next_file_ >= files_.size()) return false;
            out = read_pnm(files_[next_file_++]);
            return true;
        }
#ifdef MEDSAM3RT_HAVE_LIBAV
        return next_video_frame(out);
#else
        return false;
#endif
    }

private:
    std::vector<std::string> files_;
    size_t next_file_ = 0;
#ifdef MEDSAM3RT_HAVE_LIBAV
    AVFormatContext* format_ = nullptr;
    AVCodecContext* decoder_ = nullptr;
    AVFrame* frame_ = nullptr;
    AVPacket* packet_ = nullptr;
    SwsContext* sws_ = nullptr;
    int stream_ = -1;
    bool draining_ = false;

    void open_video(const std::string& path) {
        if (avformat_open_input(&format_, path.c_str(), nullptr, nullptr) < 0) fail(path + " is neither a frame folder nor a video FFmpeg can open");
        if (avformat_find_stream_info(format_, nullptr) < 0) fail(path + ": no stream information");
        const AVCodec* codec = nullptr;
        stream_ = av_find_best_stream(format_, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
        if (stream_ < 0 || codec == nullptr) fail(path + " has no decodable video stream");
        decoder_ = avcodec_alloc_context3(codec);
        if (!decoder_ || avcodec_parameters_to_context(decoder_, format_->streams[stream_]->codecpar) < 0 ||
            avcodec_open2(decoder_, codec, nullptr) < 0) {
            fail(path + ": cannot open the " + codec->name + " decoder");
        }
        frame_ = av_frame_alloc();
        packet_ = av_packet_alloc();
    }

    bool next_video_frame(Picture& out) {
        for (;;) {
            const int got = avcodec_receive_frame(decoder_, frame_);
            if (got == 0) break;
            if (got == AVERROR_EOF) return false;
            if (got != AVERROR(EAGAIN)) fail("video decoding failed");
            if (draining_) return false;
            int rc;
            while ((rc = av_read_frame(format_, packet_)) >= 0 && packet_->stream_index != stream_) av_packet_unref(packet_);
            if (rc < 0) {
                draining_ = true;
                avcodec_send_packet(decoder_, nullptr);  // flush the decoder's delayed frames
            } else {
                avcodec_send_packet(decoder_, packet_);
                av_packet_unref(packet_);
            }
        }
        const int w = frame_->width, h = frame_->height;
        sws_ = sws_getCachedContext(sws_, w, h, AVPixelFormat(frame_->format), w, h, AV_PIX_FMT_RGB24,
                                    SWS_BILINEAR | SWS_ACCURATE_RND | SWS_BITEXACT, nullptr, nullptr, nullptr);
        if (sws_ == nullptr) fail("cannot convert the video's pixel format to RGB");
        out = Picture{std::vector<uint8_t>(size_t(w) * size_t(h) * 3), w, h, 3, false};
        uint8_t* dst[4] = {out.data.data(), nullptr, nullptr, nullptr};
        int stride[4] = {3 * w, 0, 0, 0};
        sws_scale(sws_, frame_->data, frame_->linesize, 0, h, dst, stride);
        av_frame_unref(frame_);
        return true;
    }
#endif
};

void write_pgm(const std::string& path, const uint8_t* labels, int w, int h) {
    std::ofstream out(path, std::ios::binary);
    out << "P5\n" << w << " " << h << "\n255\n";
    out.write(reinterpret_cast<const char*>(labels), std::streamsize(size_t(w) * size_t(h)));
    if (!out) fail("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> positional, names;
    medsam3rt::StreamOptions options;
    long max_frames = -1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "-p" && has_value) {
            names.push_back(argv[++i]);
        } else if (a == "--detection-threshold" && has_value) {
            options.detection_threshold = std::stod(argv[++i]);
        } else if (a == "--new-object-threshold" && has_value) {
            options.new_object_threshold = std::stod(argv[++i]);
        } else if (a == "--mode" && has_value) {
            const std::string m = argv[++i];
            options.mode = m == "detect" ? MEDSAM3RT_STREAM_DETECT : m == "auto" ? MEDSAM3RT_STREAM_AUTO : MEDSAM3RT_STREAM_TRACK;
            if (m != "detect" && m != "auto" && m != "track") fail("--mode must be track, detect or auto, got '" + m + "'", 2);
        } else if (a == "--policy" && has_value) {
            const std::string p = argv[++i];
            if (p != "meta" && p != "transformers") fail("--policy must be meta or transformers, got '" + p + "'", 2);
            options.policy = p == "meta" ? MEDSAM3RT_POLICY_META : MEDSAM3RT_POLICY_TRANSFORMERS;
        } else if (a == "--max-frames" && has_value) {
            max_frames = std::stol(argv[++i]);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.size() < 3 || positional.size() > 4) {
        std::cerr << "usage: stream_video MODEL PACK INPUT [OUTPUT_DIR] [-p PROMPT]... [--mode track|detect|auto] "
                     "[--policy meta|transformers] [--detection-threshold X] [--new-object-threshold X] [--max-frames N]\n";
        return 2;
    }
    try {
        medsam3rt::Model model(positional[0]);
        medsam3rt::Prompts all = model.load_prompts(positional[1]);
        if (names.empty()) {  // every prompt of the pack
            for (size_t i = 0; i < all.size(); ++i) names.push_back(all.text(i));
        }
        medsam3rt::Prompts prompts = all.select(names);
        medsam3rt::Stream stream = model.stream(prompts, options);
        if (!stream.tracking()) std::printf("per-frame detection (no tracker memory): object id = prompt index\n");
        FrameSource source(positional[2]);
        Picture pic;
        std::set<int64_t> seen;
        double total_ms = 0;
        long frames = 0;
        while ((max_frames < 0 || frames < max_frames) && source.next(pic)) {
            const medsam3rt_pixel_format format = pic.channels == 1 ? MEDSAM3RT_GRAY : MEDSAM3RT_RGB;
            const medsam3rt::Image image = pic.wide ? medsam3rt::Image::u16(pic.data.data(), pic.width, pic.height, format)
                                                    : medsam3rt::Image::u8(pic.data.data(), pic.width, pic.height, format);
            const medsam3rt::Frame f = stream.push(image);
            const medsam3rt::Timings t = f.timings();
            total_ms += t.total();
            std::printf("frame %ld: %zu object%s (%.1f ms: backbone %.1f, detector %.1f, tracker %.1f, merge %.1f)\n", long(f.index()),
                        f.size(), f.size() == 1 ? "" : "s", t.total(), t.backbone, t.detector, t.tracker, t.merge);
            for (size_t i = 0; i < f.size(); ++i) {
                const medsam3rt::Object o = f.object(i);
                seen.insert(o.object_id);
                std::printf("  #%-3lld %-18s score %.4f  tracker %.4f  area %7lld px  box %g %g %g %g\n", static_cast<long long>(o.object_id),
                            prompts.text(size_t(o.prompt_index)).c_str(), o.score, o.tracker_score, static_cast<long long>(o.area),
                            o.box[0], o.box[1], o.box[2], o.box[3]);
            }
            if (positional.size() == 4) {
                char name[32];
                std::snprintf(name, sizeof name, "/frame_%05ld.pgm", long(f.index()));
                write_pgm(positional[3] + name, f.label_map(), f.width(), f.height());
            }
            ++frames;
        }
        std::printf("%ld frames, %zu objects, %.1f ms per frame, memory banks %lld bytes\n", frames, seen.size(),
                    frames ? total_ms / double(frames) : 0.0, static_cast<long long>(stream.state_bytes()));
    } catch (const medsam3rt::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return e.status();
    }
    return 0;
}
