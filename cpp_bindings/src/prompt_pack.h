// Prompt packs (medsam3_rt/prompt_pack.py): precomputed text embeddings, so the library needs
// no tokenizer and no text encoder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace m3rt {

struct PromptSet {
    std::string text_encoder_sha256;
    int64_t T = 0, C = 0;
    std::vector<std::string> prompts;  // as packed
    std::vector<std::string> keys;     // normalised (the Python cache keys)
    std::vector<float> features;       // (P, T, C), contiguous: fed to the detector without a copy
    std::vector<uint8_t> mask;         // (P, T) 0/1 (the detector's bool input)
};

// Read a pack; refuse one whose text encoder is not `expect_sha256` (when non-empty).
PromptSet read_prompt_pack(const std::string& path, const std::string& expect_sha256);

// The cache key of a prompt: whitespace runs collapsed, ASCII lower case (normalize_prompt for ASCII).
std::string prompt_key(const std::string& prompt);

// The named prompts of `from`, in order; unknown names are a usage error listing the pack's prompts.
PromptSet select_prompts(const PromptSet& from, const std::vector<std::string>& names);

}  // namespace m3rt
