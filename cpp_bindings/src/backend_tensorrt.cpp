// TensorRT backend - UNVERIFIED: no TensorRT headers or GPU were available where this was
// written, so this file has never been compiled against TensorRT's real headers or run (it was
// only syntax-checked with g++ -fsyntax-only against hand-written declarations of the TensorRT 10
// and CUDA runtime calls it uses, taken from NVIDIA's documentation). It is built only with
// -DMEDSAM3RT_WITH_TENSORRT=ON (off by default); treat the first build on a TensorRT machine
// as its first test (run tests/cpp/test_cpp_bindings.py there with the backend switched).
//
// Thin by design: it shares manifest validation, preprocessing, prompt packs, post-processing
// and the C API with the OpenVINO path, and only runs the two engines that `medsam3-rt build`
// recorded in the manifest's engines[] (TensorRT 10 API: named I/O tensors, enqueueV3).
// Engine choice follows medsam3_rt/engines.py: an entry must match this TensorRT version and
// GPU (or carry version_compatible / hardware_compatible), be built from the export's ONNX
// graph (source_onnx_sha256), and have the recorded size and SHA-256. Calls on one model are
// serialised (one execution context per graph); batches above the profile's P max are refused.
#include <NvInfer.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "trt_version.h"

#include "backend.h"
#include "error.h"
#include "sha256.h"

namespace m3rt {
namespace {

const std::string NAME = "tensorrt";

void cuda_check(cudaError_t rc, const char* what) {
    if (rc != cudaSuccess) throw Error(MEDSAM3RT_ERROR_BACKEND, std::string("CUDA ") + what + " failed: " + cudaGetErrorString(rc));
}

class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kERROR) last = msg;
    }
    std::string last;
};

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    void reserve(size_t n) {
        if (n <= bytes) return;
        if (ptr) cudaFree(ptr);
        ptr = nullptr;
        cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
        bytes = n;
    }
    ~DeviceBuffer() {
        if (ptr) cudaFree(ptr);
    }
};

std::vector<int> version_tuple(const std::string& v) { return tensorrt_release(v); }

struct Env {
    std::string tensorrt, device_name, compute_capability;
};

// engines.incompatibility: why `e` cannot run here, or "".
std::string incompatibility(const EngineEntry& e, const Env& env) {
    if (e.has_flag("version_compatible")) {
        if (!version_compatible_loads(e.tensorrt, env.tensorrt)) {
            return "it was built version-compatible with TensorRT " + e.tensorrt + ", which TensorRT " + env.tensorrt + " cannot load";
        }
    } else if (!same_tensorrt_release(e.tensorrt, env.tensorrt)) {
        return "it was built with TensorRT " + e.tensorrt + ", this machine has TensorRT " + env.tensorrt;
    }
    if (e.has_flag("hardware_compatible")) {
        if (version_tuple(env.compute_capability) < std::vector<int>{8, 0}) {
            return "it was built hardware-compatible (Ampere or newer), this GPU " + env.device_name + " is sm " + env.compute_capability;
        }
    } else if (e.compute_capability != env.compute_capability || e.device_name != env.device_name) {
        return "it was built for " + e.device_name + " (sm " + e.compute_capability + "), this machine has " + env.device_name + " (sm " +
               env.compute_capability + ")";
    }
    return "";
}

class Graph {
public:
    Graph(const Manifest& m, const std::string& graph, const Env& env, nvinfer1::IRuntime& runtime, Logger& logger) {
        const EngineEntry* best = nullptr;
        std::string reasons;
        const char* order[] = {"fp16", "bf16", "fp32"};
        for (const char* precision : order) {
            for (const auto& e : m.engines) {
                if (e.graph != graph || e.precision != precision || e.has_flag("int8")) continue;
                std::string why = incompatibility(e, env);
                if (why.empty()) {
                    best = &e;  // later entries are newer builds
                } else {
                    reasons += "; " + e.file + ": " + why;
                }
            }
            if (best) break;
        }
        if (!best) throw BackendError(NAME, "no engine of '" + graph + "' fits this machine" + reasons + "; run `medsam3-rt build " + m.root + "`");
        const std::string source_sha = [&] {
            for (const auto& f : m.files) {
                if (f.path == m.graph(graph).file) return f.sha256;
            }
            return std::string();
        }();
        const std::string hint = "; rebuild it here with `medsam3-rt build " + m.root + " --precision " + best->precision + "`";
        if (best->source_onnx_sha256 != source_sha) {
            throw ModelError("engine '" + best->file + "' (" + graph + ", " + best->precision + "): it was built from a " + graph +
                             " graph with SHA-256 " + best->source_onnx_sha256.substr(0, 12) + "..., the export's graph is " +
                             source_sha.substr(0, 12) + "... (re-exported since)" + hint);
        }
        std::ifstream in(m.path_of(best->file), std::ios::binary);
        if (!in) throw ModelError("engine '" + best->file + "' (" + graph + ", " + best->precision + "): the file is missing" + hint);
        std::string blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const std::string digest = sha256_hex(blob.data(), blob.size());
        if (int64_t(blob.size()) != best->bytes || digest != best->sha256) {
            throw ModelError("engine '" + best->file + "' has SHA-256 " + digest.substr(0, 12) + "... (" + std::to_string(blob.size()) +
                             " bytes), the manifest records " + best->sha256.substr(0, 12) + "... (" + std::to_string(best->bytes) +
                             " bytes): the file was modified or truncated" + hint);
        }
        engine_.reset(runtime.deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_) throw ModelError("TensorRT cannot deserialize " + best->file + ": " + logger.last);
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw BackendError(NAME, "cannot create an execution context for " + best->file + ": " + logger.last);
        std::map<std::string, std::string> inputs, outputs;
        for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
            const char* name = engine_->getIOTensorName(i);
            const bool is_input = engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
            (is_input ? inputs : outputs)[name] = dtype_name(engine_->getTensorDataType(name));
            if (!is_input) output_names_.push_back(name);
        }
        check_declared_io(m.graph(graph), inputs, outputs, best->file);
        if (!best->profiles.empty()) {
            for (const auto& [name, range] : best->profiles[0]) {
                if (!range.max.empty()) max_batch_[name] = range.max[0];
            }
        }
    }

    static std::string dtype_name(nvinfer1::DataType t) {
        switch (t) {
            case nvinfer1::DataType::kFLOAT: return "float32";
            case nvinfer1::DataType::kHALF: return "float16";
            case nvinfer1::DataType::kINT64: return "int64";
            case nvinfer1::DataType::kINT32: return "int32";
            case nvinfer1::DataType::kBOOL: return "bool";
            case nvinfer1::DataType::kUINT8: return "uint8";
            default: return "other";
        }
    }

    void set_input(const char* name, const std::vector<int64_t>& shape, void* device_ptr) {
        auto it = max_batch_.find(name);
        if (it != max_batch_.end() && !shape.empty() && shape[0] > it->second) {
            throw UsageError(std::to_string(shape[0]) + " prompts exceed the engine's profile (max " + std::to_string(it->second) +
                             "); rebuild with `medsam3-rt build --axis P=1:1:" + std::to_string(shape[0]) + "`");
        }
        nvinfer1::Dims d{};
        d.nbDims = static_cast<int32_t>(shape.size());
        for (size_t i = 0; i < shape.size(); ++i) d.d[i] = shape[i];
        if (!context_->setInputShape(name, d) || !context_->setTensorAddress(name, device_ptr)) {
            throw Error(MEDSAM3RT_ERROR_BACKEND, std::string("TensorRT rejected input '") + name + "'");
        }
    }

    // Allocates (or reuses) every output buffer for the current input shapes and binds it.
    void bind_outputs() {
        for (const auto& name : output_names_) {
            const nvinfer1::Dims d = context_->getTensorShape(name.c_str());
            size_t n = 4;  // every output of these graphs is float32
            for (int i = 0; i < d.nbDims; ++i) n *= size_t(d.d[i]);
            outputs_[name].reserve(n);
            if (!context_->setTensorAddress(name.c_str(), outputs_[name].ptr)) {
                throw Error(MEDSAM3RT_ERROR_BACKEND, "TensorRT rejected output '" + name + "'");
            }
        }
    }

    void run(cudaStream_t stream, Logger& logger) {
        if (!context_->enqueueV3(stream)) throw Error(MEDSAM3RT_ERROR_BACKEND, "TensorRT inference failed: " + logger.last);
    }

    std::vector<int64_t> shape(const std::string& name) const {
        const nvinfer1::Dims d = context_->getTensorShape(name.c_str());
        return std::vector<int64_t>(d.d, d.d + d.nbDims);
    }
    void* output(const std::string& name) { return outputs_.at(name).ptr; }

private:
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    std::vector<std::string> output_names_;
    std::map<std::string, DeviceBuffer> outputs_;
    std::map<std::string, int64_t> max_batch_;
};

class TensorrtBackend final : public Backend {
public:
    TensorrtBackend(const Manifest& m, const BackendOptions& options) : S_(m.dims.image_size) {
        device_ = options.device.empty() ? 0 : std::stoi(options.device);
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess || device_ < 0 || device_ >= count) {
            throw BackendError(NAME, "CUDA device " + std::to_string(device_) + " is not available (" + std::to_string(count) + " found)");
        }
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        cudaDeviceProp prop{};
        cuda_check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
        const int v = getInferLibVersion();  // major * 10000 + minor * 100 + patch (TensorRT 10)
        env_ = {std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) + "." +
                    std::to_string(NV_TENSORRT_BUILD),
                prop.name, std::to_string(prop.major) + "." + std::to_string(prop.minor)};
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw BackendError(NAME, "cannot create the TensorRT runtime: " + logger_.last);
        backbone_ = std::make_unique<Graph>(m, gc::IMAGE_BACKBONE, env_, *runtime_, logger_);
        detector_ = std::make_unique<Graph>(m, gc::DETECTOR, env_, *runtime_, logger_);
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }
    ~TensorrtBackend() override {
        if (stream_) cudaStreamDestroy(stream_);
    }

    const std::string& name() const override { return NAME; }

    void detect(const float* pixel_values, const TextInput& text, const std::function<void(const DetectorView&)>& consume) override {
        std::lock_guard<std::mutex> lock(mu_);
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        const size_t pix = size_t(3 * S_ * S_) * 4, feat = size_t(text.P * text.T * text.C) * 4, mask = size_t(text.P * text.T);
        pixels_.reserve(pix);
        features_.reserve(feat);
        mask_.reserve(mask);
        cuda_check(cudaMemcpyAsync(pixels_.ptr, pixel_values, pix, cudaMemcpyHostToDevice, stream_), "copy of pixel_values");
        cuda_check(cudaMemcpyAsync(features_.ptr, text.features, feat, cudaMemcpyHostToDevice, stream_), "copy of text_features");
        cuda_check(cudaMemcpyAsync(mask_.ptr, text.mask, mask, cudaMemcpyHostToDevice, stream_), "copy of text_mask");
        backbone_->set_input(gc::PIXEL_VALUES, {1, 3, S_, S_}, pixels_.ptr);
        backbone_->bind_outputs();
        backbone_->run(stream_, logger_);
        for (const char* name : gc::DET_FPN) detector_->set_input(name, backbone_->shape(name), backbone_->output(name));  // stays on the GPU
        detector_->set_input(gc::TEXT_FEATURES, {text.P, text.T, text.C}, features_.ptr);
        detector_->set_input(gc::TEXT_MASK, {text.P, text.T}, mask_.ptr);
        detector_->bind_outputs();
        detector_->run(stream_, logger_);
        const auto ms = detector_->shape(gc::PRED_MASKS);
        if (ms.size() != 4 || ms[0] != text.P) throw InternalError("detector outputs have unexpected shapes");
        const int64_t P = ms[0], Q = ms[1], m = ms[2];
        host_logits_.resize(size_t(P * Q));
        host_boxes_.resize(size_t(P * Q * 4));
        host_presence_.resize(size_t(P));
        host_masks_.resize(size_t(P * Q * m * m));
        auto d2h = [&](std::vector<float>& dst, const char* name) {
            cuda_check(cudaMemcpyAsync(dst.data(), detector_->output(name), dst.size() * 4, cudaMemcpyDeviceToHost, stream_), name);
        };
        d2h(host_logits_, gc::PRED_LOGITS);
        d2h(host_boxes_, gc::PRED_BOXES);
        d2h(host_presence_, gc::PRESENCE_LOGITS);
        d2h(host_masks_, gc::PRED_MASKS);
        cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        DetectorView view;
        view.P = P;
        view.Q = Q;
        view.m = m;
        view.pred_logits = host_logits_.data();
        view.pred_boxes = host_boxes_.data();
        view.presence_logits = host_presence_.data();
        view.pred_masks = host_masks_.data();
        consume(view);
    }

private:
    int64_t S_;
    int device_ = 0;
    Env env_;
    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<Graph> backbone_, detector_;
    cudaStream_t stream_ = nullptr;
    std::mutex mu_;
    DeviceBuffer pixels_, features_, mask_;
    std::vector<float> host_logits_, host_boxes_, host_presence_, host_masks_;
};

}  // namespace

std::unique_ptr<Backend> open_tensorrt(const Manifest& manifest, const BackendOptions& options) {
    return std::make_unique<TensorrtBackend>(manifest, options);
}

}  // namespace m3rt
