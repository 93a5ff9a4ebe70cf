#include "prompt_pack.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "error.h"

namespace m3rt {
namespace {

using json = nlohmann::ordered_json;

constexpr char MAGIC[8] = {'M', '3', 'R', 'T', 'P', 'A', 'C', 'K'};
constexpr uint32_t VERSION = 1;
constexpr size_t ALIGN = 64;

uint32_t le32(const std::string& b, size_t off) {
    const auto* p = reinterpret_cast<const unsigned char*>(b.data() + off);
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

struct Corrupt {
    std::string what;
};

int64_t as_int(const json& v) {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) return static_cast<int64_t>(v.get<double>());
    throw Corrupt{"expected a number, got " + v.dump()};
}

const json& at(const json& obj, const char* key) {
    if (!obj.is_object() || !obj.contains(key)) throw Corrupt{std::string("'") + key + "'"};
    return obj[key];
}

}  // namespace

std::string prompt_key(const std::string& prompt) {
    std::string out;
    bool space = false;
    for (unsigned char c : prompt) {
        if (c == ' ' || (c >= '\t' && c <= '\r')) {
            space = !out.empty();
            continue;
        }
        if (space) out.push_back(' ');
        space = false;
        out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
    }
    return out;
}

PromptSet read_prompt_pack(const std::string& path, const std::string& expect_sha256) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw ModelError("prompt pack '" + path + "' does not exist");
    if (S_ISDIR(st.st_mode)) throw ModelError("prompt pack '" + path + "' is a directory, expected a .m3pack file");
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string blob = ss.str();
    if (!in.good() && !in.eof()) throw ModelError("cannot read prompt pack '" + path + "'");
    if (blob.size() < 16 || std::memcmp(blob.data(), MAGIC, 8) != 0) {
        throw ModelError("'" + path + "' is not a medsam3-rt prompt pack (bad magic); create one with `medsam3-rt prompts pack`");
    }
    const uint32_t version = le32(blob, 8), hlen = le32(blob, 12);
    if (version > VERSION) {
        throw ModelError("prompt pack '" + path + "' has format v" + std::to_string(version) + "; this medsam3-rt reads v" +
                         std::to_string(VERSION) + ": upgrade it");
    }
    PromptSet set;
    try {
        const size_t head_end = std::min<size_t>(blob.size(), 16 + size_t(hlen));
        json header;
        try {
            header = json::parse(blob.begin() + 16, blob.begin() + static_cast<std::ptrdiff_t>(head_end));
        } catch (const json::exception& e) {
            throw Corrupt{e.what()};
        }
        const size_t data_start = 16 + size_t(hlen) + ((ALIGN - (16 + size_t(hlen)) % ALIGN) % ALIGN);
        const json& fshape = at(at(header, "features"), "shape");
        if (!fshape.is_array() || fshape.size() != 3) throw Corrupt{"features shape must have 3 dims"};
        const int64_t n = as_int(fshape[0]), t = as_int(fshape[1]), c = as_int(fshape[2]);
        const int64_t f_off = as_int(at(at(header, "features"), "offset")), m_off = as_int(at(at(header, "mask"), "offset"));
        const json& entries = at(header, "prompts");
        const json& mshape = at(at(header, "mask"), "shape");
        if (n < 0 || t < 0 || c < 0 || f_off < 0 || m_off < 0) throw Corrupt{"negative shape or offset"};
        if (!entries.is_array() || static_cast<int64_t>(entries.size()) != n || mshape != json::array({n, t})) {
            throw Corrupt{"prompt count does not match the array shapes"};
        }
        const uint64_t feat_bytes = uint64_t(n) * uint64_t(t) * uint64_t(c) * 4, mask_bytes = uint64_t(n) * uint64_t(t);
        if (data_start + std::max(uint64_t(f_off) + feat_bytes, uint64_t(m_off) + mask_bytes) > blob.size()) {
            throw Corrupt{"file is truncated (" + std::to_string(blob.size()) + " bytes)"};
        }
        const json& sha = at(header, "text_encoder_sha256");
        set.text_encoder_sha256 = sha.is_string() ? sha.get<std::string>() : sha.dump();
        set.T = t;
        set.C = c;
        for (const auto& e : entries) {
            const json& p = at(e, "prompt");
            const json& k = at(e, "key");
            as_int(at(e, "tokens"));
            set.prompts.push_back(p.is_string() ? p.get<std::string>() : p.dump());
            set.keys.push_back(k.is_string() ? k.get<std::string>() : k.dump());
        }
        set.features.resize(size_t(n * t * c));
        // Little-endian float32 on disk; the supported hosts (x86-64, aarch64) are little-endian.
        std::memcpy(set.features.data(), blob.data() + data_start + f_off, size_t(feat_bytes));
        set.mask.resize(size_t(n * t));
        const auto* mask = reinterpret_cast<const uint8_t*>(blob.data() + data_start + m_off);
        for (size_t i = 0; i < set.mask.size(); ++i) set.mask[i] = mask[i] ? 1 : 0;
    } catch (const Corrupt& e) {
        throw ModelError("prompt pack '" + path + "' is corrupt: " + e.what);
    }
    if (!expect_sha256.empty() && set.text_encoder_sha256 != expect_sha256) {
        throw ModelError("prompt pack '" + path + "' was made for another model (text encoder " + set.text_encoder_sha256.substr(0, 12) +
                         "..., this model has " + expect_sha256.substr(0, 12) + "...); rebuild it with `medsam3-rt prompts pack`");
    }
    return set;
}

PromptSet select_prompts(const PromptSet& from, const std::vector<std::string>& names) {
    PromptSet out;
    out.text_encoder_sha256 = from.text_encoder_sha256;
    out.T = from.T;
    out.C = from.C;
    const size_t row = size_t(from.T * from.C);
    for (const auto& name : names) {
        const std::string key = prompt_key(name);
        size_t i = 0;
        while (i < from.keys.size() && from.keys[i] != key) ++i;
        if (i == from.keys.size()) {
            std::string have;
            for (const auto& p : from.prompts) have += (have.empty() ? "'" : ", '") + p + "'";
            throw UsageError("prompt '" + name + "' is not in this prompt set (it has: " + have +
                             "); add it with `medsam3-rt prompts pack`");
        }
        out.prompts.push_back(from.prompts[i]);
        out.keys.push_back(from.keys[i]);
        out.features.insert(out.features.end(), from.features.begin() + i * row, from.features.begin() + (i + 1) * row);
        out.mask.insert(out.mask.begin() + out.mask.size(), from.mask.begin() + i * from.T, from.mask.begin() + (i + 1) * from.T);
    }
    return out;
}

}  // namespace m3rt
