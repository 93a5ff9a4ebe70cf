#include "manifest.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "error.h"
#include "manifest_schema.h"
#include "sha256.h"
#include "version.h"

namespace m3rt {
namespace {

using json = nlohmann::ordered_json;

const std::set<std::string> TOP_LEVEL_KEYS = {"schema", "schema_version", "model", "producer", "dims", "preprocess", "tokenizer",
                                              "graphs", "files", "postprocess", "tracker", "engines", "parity"};

// Python's repr() of a decoded JSON value, for messages that quote a bad value.
std::string py_repr(const json& v) {
    if (v.is_null()) return "None";
    if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
    if (v.is_string()) return "'" + v.get<std::string>() + "'";
    return v.dump();
}

std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t\r\n\f\v"), b = s.find_last_not_of(" \t\r\n\f\v");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

struct BadValue {
    std::string what;
};

// Python's int(x) on a decoded JSON value (ints, floats truncated, bools, integer strings).
int64_t py_int(const json& v) {
    if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
        double d = v.get<double>();
        if (!std::isfinite(d) || std::fabs(d) > 9.2e18) throw BadValue{"cannot convert float " + v.dump() + " to integer"};
        return static_cast<int64_t>(d);
    }
    if (v.is_string()) {
        std::string s = trim(v.get<std::string>());
        char* end = nullptr;
        errno = 0;
        long long r = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || *end != '\0' || errno == ERANGE) throw BadValue{"invalid literal for int() with base 10: " + py_repr(v)};
        return r;
    }
    throw BadValue{"int() argument must be a string or a number, not " + py_repr(v)};
}

// Python's float(x) on a decoded JSON value.
double py_float(const json& v) {
    if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
    if (v.is_number()) return v.get<double>();
    if (v.is_string()) {
        std::string s = trim(v.get<std::string>());
        char* end = nullptr;
        double r = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != '\0') throw BadValue{"could not convert string to float: " + py_repr(v)};
        return r;
    }
    throw BadValue{"float() argument must be a string or a real number, not " + py_repr(v)};
}

// Python's bool(x).
bool py_bool(const json& v) {
    if (v.is_null()) return false;
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_number()) return v.get<double>() != 0.0;
    if (v.is_string() || v.is_array() || v.is_object()) return !v.empty();
    return true;
}

std::string py_str(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

gc::ModelDims parse_dims(const json& d) {
    gc::ModelDims dims;
    const std::vector<std::pair<const char*, int64_t*>> fields = {
        {"image_size", &dims.image_size},
        {"patch_size", &dims.patch_size},
        {"fpn_channels", &dims.fpn_channels},
        {"text_context", &dims.text_context},
        {"num_queries", &dims.num_queries},
        {"tracker_feat_s0_channels", &dims.tracker_feat_s0_channels},
        {"tracker_feat_s1_channels", &dims.tracker_feat_s1_channels},
        {"memory_channels", &dims.memory_channels},
    };
    try {
        for (size_t i = 0; i < fields.size(); ++i) {
            auto it = d.find(fields[i].first);
            if (it != d.end()) {
                *fields[i].second = py_int(*it);
            } else if (i < 5) {
                throw BadValue{std::string("missing required field '") + fields[i].first + "'"};
            }
        }
    } catch (const BadValue& e) {
        throw ModelError("manifest 'dims' is malformed: " + e.what);
    }
    if (dims.image_size <= 0 || dims.patch_size <= 0 || dims.image_size % dims.patch_size) {
        throw ModelError("manifest 'dims': image_size " + std::to_string(dims.image_size) + " must be a multiple of patch_size");
    }
    return dims;
}

gc::TensorSpec parse_tensor(const json& t, const std::string& where) {
    if (!t.is_object() || !t.contains("name") || !t.contains("dtype") || !t.contains("shape")) {
        throw ModelError(where + ": tensor entries need 'name', 'dtype' and 'shape'");
    }
    const json &name = t["name"], &dtype = t["dtype"], &shape = t["shape"];
    bool known = dtype.is_string();
    if (known) {
        known = false;
        for (const auto& s : gc::SUPPORTED_DTYPES) known = known || dtype.get<std::string>() == s;
    }
    if (!known) throw ModelError(where + ": tensor '" + py_str(name) + "' has unsupported dtype '" + py_str(dtype) + "'");
    gc::TensorSpec spec{py_str(name), dtype.get<std::string>(), {}};
    bool ok = shape.is_array();
    if (ok) {
        for (const auto& d : shape) {
            if (d.is_number_integer()) {
                spec.shape.emplace_back(d.get<int64_t>());
            } else if (d.is_string()) {
                spec.shape.emplace_back(d.get<std::string>());
            } else {
                ok = false;
            }
        }
    }
    if (!ok) throw ModelError(where + ": tensor '" + spec.name + "' shape must be a list of ints and axis names");
    return spec;
}

std::vector<gc::TensorSpec> parse_tensors(const json& entry, const char* key, const std::string& where) {
    std::vector<gc::TensorSpec> out;
    auto it = entry.find(key);
    if (it == entry.end()) return out;
    for (const auto& t : *it) out.push_back(parse_tensor(t, where));
    return out;
}

bool unsafe_relative(const std::string& rel) {
    if (!rel.empty() && rel[0] == '/') return true;
    std::stringstream ss(rel);
    std::string part;
    while (std::getline(ss, part, '/')) {
        if (part == "..") return true;
    }
    return false;
}

Preprocess parse_preprocess(const json& d) {
    Preprocess pre;
    std::string resize, interpolation, channel_order;
    std::vector<double> mean, std_;
    try {
        auto need = [&](const char* key) -> const json& {
            auto it = d.find(key);
            if (it == d.end()) throw BadValue{std::string("'") + key + "'"};
            return *it;
        };
        const json& size = need("image_size");
        if (size.is_array()) {
            if (size.empty()) throw BadValue{"list index out of range"};
            pre.image_size = py_int(size[0]);
            if (size.size() != 2 || size[0] != size[1]) throw BadValue{"only square image sizes are supported"};
        } else {
            pre.image_size = py_int(size);
        }
        pre.rescale_factor = py_float(need("rescale_factor"));
        for (const auto& [key, dst] : {std::make_pair("mean", &mean), std::make_pair("std", &std_)}) {
            const json& v = need(key);
            if (!v.is_array()) throw BadValue{std::string("'") + key + "' must be a list"};
            for (const auto& x : v) dst->push_back(py_float(x));
        }
        auto get_str = [&](const char* key, const char* dflt) { return d.contains(key) ? py_str(d[key]) : std::string(dflt); };
        resize = get_str("resize", "stretch");
        interpolation = get_str("interpolation", "bilinear");
        pre.antialias = d.contains("antialias") ? py_bool(d["antialias"]) : true;
        channel_order = get_str("channel_order", "RGB");
    } catch (const BadValue& e) {
        throw ModelError("manifest 'preprocess' is malformed: " + e.what);
    }
    if (mean.size() != 3 || std_.size() != 3 || std::min({std_[0], std_[1], std_[2]}) <= 0) {
        throw ModelError("manifest 'preprocess': mean and std need 3 values, std > 0");
    }
    for (size_t i = 0; i < 3; ++i) {
        pre.mean[i] = mean[i];
        pre.std[i] = std_[i];
    }
    if (resize != "stretch" || interpolation != "bilinear" || channel_order != "RGB") {
        throw ModelError("manifest 'preprocess': resize=" + resize + " interpolation=" + interpolation + " channel_order=" + channel_order +
                         " is not supported by libmedsam3rt " + MEDSAM3RT_VERSION_STRING);
    }
    return pre;
}

std::string parse_tokenizer(const json& d) {
    for (const char* key : {"file", "context_length", "pad_id", "bos_id", "eos_id", "vocab_size"}) {
        auto it = d.find(key);
        bool bad = it == d.end();
        if (!bad && std::string(key) != "file") {
            try {
                py_int(*it);
            } catch (const BadValue& e) {
                throw ModelError("manifest 'tokenizer' is malformed: missing or bad " + e.what);
            }
        }
        if (bad) throw ModelError(std::string("manifest 'tokenizer' is malformed: missing or bad '") + key + "'");
    }
    return py_str(d["file"]);
}

ShapeRange parse_shape_range(const json& r, const std::string& where) {
    ShapeRange out;
    try {
        for (const auto& [key, dst] : {std::make_pair("min", &out.min), std::make_pair("opt", &out.opt), std::make_pair("max", &out.max)}) {
            if (!r.is_object() || !r.contains(key) || !r[key].is_array()) throw BadValue{};
            for (const auto& v : r[key]) dst->push_back(py_int(v));
        }
    } catch (const BadValue&) {
        throw ModelError(where + ": profile shapes need 'min', 'opt' and 'max' lists of ints");
    }
    bool ok = out.min.size() == out.opt.size() && out.opt.size() == out.max.size();
    for (size_t i = 0; ok && i < out.min.size(); ++i) ok = out.min[i] <= out.opt[i] && out.opt[i] <= out.max[i];
    if (!ok) {
        auto list = [](const std::vector<int64_t>& v) {
            std::string s = "[";
            for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
            return s + "]";
        };
        throw ModelError(where + ": profile shapes need equal ranks and min <= opt <= max, got {'min': " + list(out.min) +
                         ", 'opt': " + list(out.opt) + ", 'max': " + list(out.max) + "}");
    }
    return out;
}

EngineEntry parse_engine(const json& d, size_t index) {
    const std::string where = "manifest engines[" + std::to_string(index) + "]";
    if (!d.is_object()) throw ModelError(where + " must be an object");
    std::string missing;
    for (const char* key : {"graph", "file", "sha256", "precision", "tensorrt", "device_name", "compute_capability", "source_onnx_sha256"}) {
        if (!d.contains(key) || !d[key].is_string() || d[key].get<std::string>().empty()) {
            missing += std::string(missing.empty() ? "'" : ", '") + key + "'";
        }
    }
    if (!missing.empty()) throw ModelError(where + " needs string fields [" + missing + "]");
    EngineEntry e;
    e.graph = d["graph"].get<std::string>();
    e.file = d["file"].get<std::string>();
    e.sha256 = d["sha256"].get<std::string>();
    e.precision = d["precision"].get<std::string>();
    e.tensorrt = d["tensorrt"].get<std::string>();
    e.device_name = d["device_name"].get<std::string>();
    e.compute_capability = d["compute_capability"].get<std::string>();
    e.source_onnx_sha256 = d["source_onnx_sha256"].get<std::string>();
    if (unsafe_relative(e.file)) throw ModelError(where + ": file '" + e.file + "' must be a relative path inside the export directory");
    if (e.precision != "fp32" && e.precision != "fp16" && e.precision != "bf16") {
        throw ModelError(where + ": precision '" + e.precision + "' is not one of fp32, fp16, bf16");
    }
    try {
        e.bytes = d.contains("bytes") ? py_int(d["bytes"]) : 0;
        auto strings = [&](const char* key, std::vector<std::string>* out) {
            if (!d.contains(key)) return;
            if (!d[key].is_array()) throw BadValue{};
            for (const auto& v : d[key]) out->push_back(py_str(v));
        };
        if (d.contains("profiles")) {
            if (!d["profiles"].is_array()) throw BadValue{};
            for (size_t i = 0; i < d["profiles"].size(); ++i) {
                const json& p = d["profiles"][i];
                if (!p.is_object()) throw BadValue{};
                std::map<std::string, ShapeRange> profile;
                for (const auto& [name, r] : p.items()) {
                    profile[name] = parse_shape_range(r, where + " profile " + std::to_string(i) + " input '" + name + "'");
                }
                e.profiles.push_back(std::move(profile));
            }
        }
        std::vector<std::string> pinned;
        strings("flags", &e.flags);
        strings("pinned_fp32", &pinned);
    } catch (const BadValue&) {
        throw ModelError(where + ": 'bytes', 'profiles', 'flags' or 'pinned_fp32' is malformed");
    }
    return e;
}

std::string strip_root(std::string root) {
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    return root;
}

}  // namespace

const GraphEntry& Manifest::graph(const std::string& name) const {
    auto it = graphs.find(name);
    if (it == graphs.end()) {
        std::string have;
        for (const auto& g : graph_order) have += (have.empty() ? "" : ", ") + g;
        throw ModelError("this export has no '" + name + "' graph (it has: " + have + ")");
    }
    return it->second;
}

std::string Manifest::text_encoder_sha256() const {
    const std::string& file = graph(gc::TEXT_ENCODER).file;
    for (const auto& f : files) {
        if (f.path == file) return f.sha256;
    }
    throw InternalError("text encoder file has no manifest entry");
}

Manifest parse_manifest(const std::string& text, const std::string& root_in, const std::string& path_for_messages) {
    json data;
    try {
        data = json::parse(text);
    } catch (const json::exception& e) {
        throw ModelError(path_for_messages + " is not valid JSON (" + e.what() + "); re-run `medsam3-rt export`");
    }
    Manifest m;
    m.root = strip_root(root_in);
    if (!data.is_object() || !data.contains("schema") || data["schema"] != MANIFEST_SCHEMA) {
        throw ModelError(std::string("not a medsam3-rt manifest (expected \"schema\": \"") + MANIFEST_SCHEMA + "\")");
    }
    const json version = data.contains("schema_version") ? data["schema_version"] : json();
    if (!version.is_number_integer() || version.get<int64_t>() < 1) {
        throw ModelError("manifest has an invalid schema_version " + py_repr(version));
    }
    if (version.get<int64_t>() > MANIFEST_SCHEMA_VERSION) {
        throw ModelError("manifest schema v" + version.dump() + " was written by a newer medsam3-rt; this is libmedsam3rt " +
                         MEDSAM3RT_VERSION_STRING + ", which reads up to v" + std::to_string(MANIFEST_SCHEMA_VERSION) +
                         ": upgrade libmedsam3rt");
    }
    m.schema_version = static_cast<int>(version.get<int64_t>());
    // The shape (sections present and of the right type, graph and file entries, list-typed fields) is the
    // schema's job (medsam3_rt/schemas/manifest.v1.json, as the Python reader); what follows are the rules it
    // cannot state: graph names and I/O against this runtime, cross-references between sections, conversions.
    check_manifest_schema(data);
    // Unknown top-level keys are ignored (the Python runtime logs a warning).
    m.dims = parse_dims(data.at("dims"));
    const auto expected = gc::expected_specs(m.dims);
    for (const auto& [name, entry] : data.at("graphs").items()) {
        if (!expected.count(name)) {
            throw ModelError("manifest lists graph '" + name + "', which this runtime does not know (or the model has no tracker)");
        }
        const std::string where = "graph '" + name + "'";
        gc::GraphSpec spec{name, parse_tensors(entry, "inputs", where), parse_tensors(entry, "outputs", where)};
        if (spec != expected.at(name)) {
            throw ModelError("manifest graph '" + name + "' declares I/O " + gc::describe(spec) + ", this runtime expects " +
                             gc::describe(expected.at(name)));
        }
        GraphEntry g{name, entry["file"].get<std::string>(), spec, {}};
        if (entry.contains("external_data")) {
            for (const auto& e : entry["external_data"]) g.external_data.push_back(e.get<std::string>());
        }
        m.graph_order.push_back(name);
        m.graphs[name] = std::move(g);
    }
    std::string missing;
    for (const auto& g : gc::DETECTOR_GRAPHS) {
        if (!m.graphs.count(g)) missing += (missing.empty() ? "" : ", ") + g;
    }
    if (!missing.empty()) {
        throw ModelError("manifest has no " + missing + " graph(s); every export needs text_encoder, image_backbone, detector");
    }
    std::vector<std::string> present_trk;
    for (const auto& g : gc::TRACKER_GRAPHS) {
        if (m.graphs.count(g)) present_trk.push_back(g);
    }
    if (!present_trk.empty() && present_trk.size() != gc::TRACKER_GRAPHS.size()) {
        std::string have;
        for (const auto& g : present_trk) have += (have.empty() ? "'" : ", '") + g + "'";
        throw ModelError("manifest has tracker graphs [" + have + "] but needs all of ['tracker_init', 'tracker_step', 'memory_encoder']");
    }
    m.has_tracker = !present_trk.empty();
    for (const auto& [rel, entry] : data.at("files").items()) {
        if (unsafe_relative(rel)) {
            throw ModelError("manifest file entry '" + rel + "' must be a relative path inside the export directory");
        }
        try {
            m.files.push_back({rel, py_str(entry["sha256"]), py_int(entry["bytes"])});
        } catch (const BadValue&) {
            throw ModelError("manifest file entry '" + rel + "' needs 'sha256' and 'bytes'");
        }
    }
    m.tokenizer_file = parse_tokenizer(data.at("tokenizer"));
    auto listed = [&](const std::string& rel) {
        for (const auto& f : m.files) {
            if (f.path == rel) return true;
        }
        return false;
    };
    for (const auto& name : m.graph_order) {
        const GraphEntry& g = m.graphs[name];
        std::vector<std::string> rels = {g.file};
        rels.insert(rels.end(), g.external_data.begin(), g.external_data.end());
        for (const auto& rel : rels) {
            if (!listed(rel)) throw ModelError("graph '" + name + "' file '" + rel + "' has no entry in the manifest's 'files'");
        }
    }
    if (!listed(m.tokenizer_file)) {
        throw ModelError("tokenizer file '" + m.tokenizer_file + "' has no entry in the manifest's 'files'");
    }
    m.preprocess = parse_preprocess(data.at("preprocess"));
    if (m.preprocess.image_size != m.dims.image_size) {
        throw ModelError("manifest preprocess image size " + std::to_string(m.preprocess.image_size) + " != dims.image_size " +
                         std::to_string(m.dims.image_size));
    }
    bool tracker_dict = data.contains("tracker") && data["tracker"].is_object();
    if (m.has_tracker != tracker_dict) throw ModelError("manifest 'tracker' settings and tracker graphs must come together");
    if (tracker_dict) m.tracker_json = data["tracker"].dump();
    if (data.contains("engines") && !data["engines"].is_null()) {
        const json& engines = data["engines"];
        for (size_t i = 0; i < engines.size(); ++i) m.engines.push_back(parse_engine(engines[i], i));
        for (size_t i = 0; i < m.engines.size(); ++i) {
            if (!m.graphs.count(m.engines[i].graph)) {
                throw ModelError("manifest engines[" + std::to_string(i) + "] is for graph '" + m.engines[i].graph +
                                 "', which this export does not have");
            }
        }
    }
    const json& model = data.at("model");
    if (model.contains("source") && model["source"].is_object() && model["source"].contains("class")) {
        m.source_class = py_str(model["source"]["class"]);
    }
    if (data.contains("postprocess") && py_bool(data["postprocess"])) {
        const json& post = data["postprocess"];
        try {
            if (!post.is_object()) throw BadValue{"not a dict"};
            if (post.contains("mask_threshold")) m.mask_threshold = py_float(post["mask_threshold"]);
        } catch (const BadValue& e) {
            throw ModelError("manifest 'postprocess' is malformed: " + e.what);
        }
    }
    return m;
}

TrackerSettings tracker_settings(const Manifest& m) {
    TrackerSettings s;
    if (!m.has_tracker || m.tracker_json.empty()) throw ModelError("manifest 'tracker' section is missing or has a bad value for 'tracker'");
    const json data = json::parse(m.tracker_json);
    // Field order of the Python dataclass: the first missing or bad one is reported.
    struct Field {
        const char* name;
        char kind;  // 'f' float, 'i' int, 'b' bool
        void* dst;
    };
    const Field fields[] = {
        {"score_threshold_detection", 'f', &s.score_threshold_detection},
        {"det_nms_thresh", 'f', &s.det_nms_thresh},
        {"assoc_iou_thresh", 'f', &s.assoc_iou_thresh},
        {"trk_assoc_iou_thresh", 'f', &s.trk_assoc_iou_thresh},
        {"new_det_thresh", 'f', &s.new_det_thresh},
        {"recondition_on_trk_masks", 'b', &s.recondition_on_trk_masks},
        {"hotstart_delay", 'i', &s.hotstart_delay},
        {"hotstart_unmatch_thresh", 'i', &s.hotstart_unmatch_thresh},
        {"hotstart_dup_thresh", 'i', &s.hotstart_dup_thresh},
        {"suppress_unmatched_only_within_hotstart", 'b', &s.suppress_unmatched_only_within_hotstart},
        {"init_trk_keep_alive", 'i', &s.init_trk_keep_alive},
        {"max_trk_keep_alive", 'i', &s.max_trk_keep_alive},
        {"min_trk_keep_alive", 'i', &s.min_trk_keep_alive},
        {"suppress_overlapping_based_on_recent_occlusion_threshold", 'f', &s.suppress_overlapping_based_on_recent_occlusion_threshold},
        {"decrease_trk_keep_alive_for_empty_masklets", 'b', &s.decrease_trk_keep_alive_for_empty_masklets},
        {"fill_hole_area", 'i', &s.fill_hole_area},
        {"max_num_objects", 'i', &s.max_num_objects},
        {"recondition_every_nth_frame", 'i', &s.recondition_every_nth_frame},
        {"high_conf_thresh", 'f', &s.high_conf_thresh},
        {"high_iou_thresh", 'f', &s.high_iou_thresh},
        {"num_maskmem", 'i', &s.num_maskmem},
        {"max_cond_frame_num", 'i', &s.max_cond_frame_num},
        {"max_object_pointers_in_encoder", 'i', &s.max_object_pointers_in_encoder},
    };
    try {
        for (const Field& f : fields) {
            auto it = data.find(f.name);
            if (it == data.end()) throw BadValue{std::string("'") + f.name + "'"};  // str(KeyError)
            if (f.kind == 'f') *static_cast<double*>(f.dst) = py_float(*it);
            if (f.kind == 'i') *static_cast<int64_t*>(f.dst) = py_int(*it);
            if (f.kind == 'b') *static_cast<bool*>(f.dst) = py_bool(*it);
        }
    } catch (const BadValue& e) {
        throw ModelError("manifest 'tracker' section is missing or has a bad value for " + e.what);
    }
    if (s.num_maskmem < 1 || s.max_object_pointers_in_encoder < 1 || s.max_cond_frame_num < 1) {
        throw ModelError("manifest 'tracker': num_maskmem, max_cond_frame_num and max_object_pointers_in_encoder must be >= 1");
    }
    return s;
}

double tracker_float(const Manifest& m, const char* key, double fallback) {
    if (m.tracker_json.empty()) return fallback;
    const json data = json::parse(m.tracker_json);
    auto it = data.find(key);
    if (it == data.end()) return fallback;
    try {
        return py_float(*it);
    } catch (const BadValue& e) {
        throw ModelError(std::string("manifest 'tracker' section is missing or has a bad value for '") + key + "': " + e.what);
    }
}

std::string tracker_string(const Manifest& m, const char* key, const std::string& fallback) {
    if (m.tracker_json.empty()) return fallback;
    const json data = json::parse(m.tracker_json);
    auto it = data.find(key);
    if (it == data.end()) return fallback;
    if (!it->is_string()) throw ModelError(std::string("manifest 'tracker' section is missing or has a bad value for '") + key + "'");
    return it->get<std::string>();
}

bool tracker_bool(const Manifest& m, const char* key, bool fallback) {
    if (m.tracker_json.empty()) return fallback;
    const json data = json::parse(m.tracker_json);
    auto it = data.find(key);
    if (it == data.end()) return fallback;
    if (!it->is_boolean()) throw ModelError(std::string("manifest 'tracker': ") + key + " must be true or false, got " + it->dump());
    return it->get<bool>();
}

void verify_files(const Manifest& m, Verify verify) {
    if (verify == Verify::none) return;
    static std::mutex mu;
    static std::map<std::tuple<std::string, int64_t, int64_t>, std::string> verified;
    for (const auto& f : m.files) {
        const std::string path = m.path_of(f.path);
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            if (errno == ENOENT || errno == ENOTDIR) {
                throw ModelError(m.root + ": '" + f.path + "' is listed in " + MANIFEST_NAME + " but missing; re-run `medsam3-rt export`");
            }
            throw ModelError(m.root + ": cannot read '" + f.path + "': " + std::strerror(errno));
        }
        if (static_cast<int64_t>(st.st_size) != f.bytes) {
            throw ModelError(m.root + ": '" + f.path + "' is " + std::to_string(st.st_size) + " bytes, " + MANIFEST_NAME + " records " +
                             std::to_string(f.bytes) + "; the file was modified or truncated; re-run `medsam3-rt export`");
        }
        if (verify == Verify::size) continue;
        char resolved[PATH_MAX];
        std::string real = ::realpath(path.c_str(), resolved) ? std::string(resolved) : path;
        auto key = std::make_tuple(real, static_cast<int64_t>(st.st_size),
                                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec);
        {
            std::lock_guard<std::mutex> lock(mu);
            auto it = verified.find(key);
            if (it != verified.end() && it->second == f.sha256) continue;
        }
        std::string digest = sha256_file(path);
        if (digest != f.sha256) {
            throw ModelError(m.root + ": '" + f.path + "' has SHA-256 " + digest.substr(0, 12) + "..., " + MANIFEST_NAME + " records " +
                             f.sha256.substr(0, 12) + "...; the file was tampered with or corrupted; re-run `medsam3-rt export`");
        }
        std::lock_guard<std::mutex> lock(mu);
        verified[key] = digest;
    }
}

Manifest load_manifest(const std::string& model_dir, Verify verify) {
    const std::string root = strip_root(model_dir);
    struct stat st {};
    if (::stat(root.c_str(), &st) != 0) throw ModelError("model directory '" + root + "' does not exist");
    if (!S_ISDIR(st.st_mode)) throw ModelError("'" + root + "' is not a directory; pass the folder written by `medsam3-rt export`");
    const std::string path = root + "/" + MANIFEST_NAME;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        throw ModelError("'" + root + "' has no " + MANIFEST_NAME + "; is it an export directory? Create one with `medsam3-rt export`");
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    if (!in.good() && !in.eof()) throw ModelError("cannot read " + path);
    Manifest m = parse_manifest(buf.str(), root, path);
    verify_files(m, verify);
    return m;
}

}  // namespace m3rt
