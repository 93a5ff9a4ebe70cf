#include "backend.h"

#include "error.h"

namespace m3rt {

std::string compiled_backends() {
    std::string out;
#ifdef MEDSAM3RT_HAVE_OPENVINO
    out += "openvino";
#endif
#ifdef MEDSAM3RT_HAVE_TENSORRT
    out += out.empty() ? "tensorrt" : ", tensorrt";
#endif
    return out;
}

std::unique_ptr<Backend> open_backend(const std::string& name, const Manifest& manifest, const BackendOptions& options) {
#ifdef MEDSAM3RT_HAVE_OPENVINO
    if (name == "openvino") return open_openvino(manifest, options);
#endif
#ifdef MEDSAM3RT_HAVE_TENSORRT
    if (name == "tensorrt") return open_tensorrt(manifest, options);
#endif
    if (name == "openvino" || name == "tensorrt") {
        throw BackendError(name, "this libmedsam3rt was built without it (built with: " + compiled_backends() +
                                     "); rebuild with -DMEDSAM3RT_WITH_" + (name == "openvino" ? "OPENVINO" : "TENSORRT") + "=ON");
    }
    throw UsageError("unknown backend '" + name + "'; choose one of: " + compiled_backends());
}

void check_declared_io(const GraphEntry& entry, const std::map<std::string, std::string>& inputs,
                       const std::map<std::string, std::string>& outputs, const std::string& file_name) {
    auto sorted_names = [](const std::map<std::string, std::string>& m) {
        std::string s = "[";
        for (const auto& [k, v] : m) s += (s.size() > 1 ? ", '" : "'") + k + "'";
        return s + "]";
    };
    const std::vector<std::pair<std::string, std::pair<const std::map<std::string, std::string>*, const std::vector<gc::TensorSpec>*>>> kinds =
        {{"inputs", {&inputs, &entry.spec.inputs}}, {"outputs", {&outputs, &entry.spec.outputs}}};
    for (const auto& [kind, pair] : kinds) {
        const auto& got = *pair.first;
        std::map<std::string, std::string> want;
        for (const auto& t : *pair.second) want[t.name] = t.dtype;
        bool same = got.size() == want.size();
        for (const auto& [name, dtype] : want) same = same && got.count(name);
        if (!same) {
            throw ModelError(file_name + " declares " + kind + " " + sorted_names(got) + ", the manifest says " + sorted_names(want) +
                             "; the file does not belong to this manifest: re-run `medsam3-rt export`");
        }
        for (const auto& t : *pair.second) {
            if (got.at(t.name) != t.dtype) {
                throw ModelError(file_name + ": " + kind.substr(0, kind.size() - 1) + " '" + t.name + "' is " + got.at(t.name) +
                                 ", the manifest says " + t.dtype);
            }
        }
    }
}

}  // namespace m3rt
