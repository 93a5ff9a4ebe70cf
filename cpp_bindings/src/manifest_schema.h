#pragma once
// Validation of manifest.json against the JSON Schema the Python runtime uses
// (medsam3_rt/schemas/manifest.v1.json, embedded at build time). Messages are the schema's
// `x-message`s, chosen by the same rule as medsam3_rt.manifest.check_schema (docs/manifest.md).

#include <nlohmann/json.hpp>

namespace m3rt {

// Throws ModelError with the schema's message when `data` does not match the schema.
void check_manifest_schema(const nlohmann::ordered_json& data);

}  // namespace m3rt
