#include "manifest_schema.h"

#include <algorithm>
#include <string>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>
#include <vector>

#include "error.h"

namespace m3rt {

extern const char* const MANIFEST_SCHEMA_JSON;

namespace {

using json = nlohmann::json;

struct Loaded {
    json doc;
    valijson::Schema schema;
};

const Loaded& loaded() {
    static const Loaded* l = [] {
        auto* out = new Loaded;
        out->doc = json::parse(MANIFEST_SCHEMA_JSON);
        valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
        valijson::adapters::NlohmannJsonAdapter adapter(out->doc);
        parser.populateSchema(adapter, out->schema);
        return out;
    }();
    return *l;
}

// valijson's context entries are "<root>", then "[name]" or "[index]".
std::vector<std::string> instance_path(const std::vector<std::string>& context) {
    std::vector<std::string> out;
    for (size_t i = 1; i < context.size(); ++i) {
        const std::string& c = context[i];
        out.push_back(c.size() >= 2 && c.front() == '[' && c.back() == ']' ? c.substr(1, c.size() - 2) : c);
    }
    return out;
}

std::string missing_property(const std::string& description) {
    const std::string head = "Missing required property '";
    if (description.rfind(head, 0) != 0) return {};
    const size_t end = description.find('\'', head.size());
    return end == std::string::npos ? std::string() : description.substr(head.size(), end - head.size());
}

// "{path[N]}" -> the N-th element of the failing value's location.
std::string fill(const std::string& message, const std::vector<std::string>& path) {
    std::string out;
    for (size_t i = 0; i < message.size();) {
        if (message.compare(i, 6, "{path[") == 0) {
            const size_t close = message.find("]}", i);
            if (close != std::string::npos) {
                const size_t n = std::stoul(message.substr(i + 6, close - i - 6));
                out += n < path.size() ? path[n] : std::string();
                i = close + 2;
                continue;
            }
        }
        out += message[i++];
    }
    return out;
}

// The innermost `x-message` on the way from the schema root along the instance path.
std::string message_for(const json& schema, const nlohmann::ordered_json& data, const std::vector<std::string>& path,
                        const std::string& missing) {
    const json* node = &schema;
    const nlohmann::ordered_json* value = &data;
    std::string message = schema.value("x-message", std::string("manifest does not match its schema"));
    for (const std::string& step : path) {
        const json* next = nullptr;
        if (value->is_object()) {
            if (node->contains("properties") && (*node)["properties"].contains(step)) {
                next = &(*node)["properties"][step];
            } else if (node->contains("additionalProperties") && (*node)["additionalProperties"].is_object()) {
                next = &(*node)["additionalProperties"];
            }
            value = value->contains(step) ? &(*value)[step] : value;
        } else if (value->is_array()) {
            if (node->contains("items") && (*node)["items"].is_object()) next = &(*node)["items"];
            const size_t index = std::stoul(step);
            value = index < value->size() ? &(*value)[index] : value;
        }
        if (next == nullptr) break;
        node = next;
        if (node->contains("x-message")) message = (*node)["x-message"].get<std::string>();
    }
    if (!missing.empty() && node->contains("properties") && (*node)["properties"].contains(missing)) {
        message = (*node)["properties"][missing].value("x-message", message);
    }
    return fill(message, path);
}

}  // namespace

void check_manifest_schema(const nlohmann::ordered_json& data) {
    const Loaded& l = loaded();
    const json plain = json::parse(data.dump());  // valijson's adapter reads nlohmann::json
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(plain);
    if (validator.validate(l.schema, target, &results)) return;

    // The order the Python reader uses: the schema's `required`, then its `properties`.
    std::vector<std::string> order;
    for (const auto& k : l.doc.value("required", json::array())) order.push_back(k.get<std::string>());
    for (const auto& [k, _] : l.doc.value("properties", json::object()).items()) {
        if (std::find(order.begin(), order.end(), k) == order.end()) order.push_back(k);
    }
    auto rank_of = [&](const std::string& key) {
        const auto it = std::find(order.begin(), order.end(), key);
        return static_cast<long>(it - order.begin());
    };

    bool found = false;
    long best_rank = 0;
    size_t best_depth = 0;
    std::string best;
    valijson::ValidationResults::Error error;
    while (results.popError(error)) {
        if (error.description.rfind("Failed to validate", 0) == 0) continue;  // a parent's summary of a deeper failure
        const auto path = instance_path(error.context);
        const std::string missing = missing_property(error.description);
        long rank;
        if (!path.empty()) {
            rank = rank_of(path[0]);
        } else if (!missing.empty()) {
            rank = rank_of(missing);
        } else {
            rank = -1;
        }
        if (!found || rank < best_rank || (rank == best_rank && path.size() < best_depth)) {
            found = true;
            best_rank = rank;
            best_depth = path.size();
            best = message_for(l.doc, data, path, missing);
        }
    }
    throw ModelError(found ? best : loaded().doc.value("x-message", std::string("manifest does not match its schema")));
}

}  // namespace m3rt
