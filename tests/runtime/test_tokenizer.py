"""Host tokenizer (tokenizers library, from the export's tokenizer.json) vs transformers' CLIPTokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsam3_rt.errors import PromptError
from medsam3_rt.manifest import load_manifest
from medsam3_rt.tokenizer import ClipTokenizer, as_prompt_list, normalize_prompt

MEDICAL_PROMPTS = [
    "polyp",
    "Fetal Head",
    "LEFT KIDNEY",
    "left ventricle myocardium",
    "thyroid nodule, TI-RADS 4",
    "optic disc & cup",
    "café-au-lait macule",
    "T2-hyperintense   lesion\t(periventricular)",
    "Œdème cérébral",
    "肝脏肿瘤",
    "glioblastoma (WHO grade 4)!",
    "breast tumour; BI-RADS 5?",
    "intraretinal fluid",
    "a",
]
LONG_PROMPT = (
    "the small hyperechoic focus with posterior acoustic shadowing in the lower pole of the right kidney, "
    "adjacent to the renal pelvis and the proximal ureter, suspicious for a calculus"
)


@pytest.fixture(scope="module")
def runtime_tokenizer(tiny_export: Path) -> ClipTokenizer:
    m = load_manifest(tiny_export)
    return ClipTokenizer(tiny_export / m.tokenizer.file, m.tokenizer)


@pytest.fixture(scope="module")
def reference():
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer

    return bundled_clip_tokenizer()


def test_ids_match_transformers_clip_tokenizer(runtime_tokenizer: ClipTokenizer, reference) -> None:
    ids, mask = runtime_tokenizer.encode(MEDICAL_PROMPTS)
    ref = reference(MEDICAL_PROMPTS, padding="max_length", max_length=32)
    np.testing.assert_array_equal(ids, np.asarray(ref["input_ids"]))
    np.testing.assert_array_equal(mask, np.asarray(ref["attention_mask"]))
    assert ids.dtype == np.int64 and ids.shape == (len(MEDICAL_PROMPTS), 32)


def test_long_prompt_is_an_error_unless_truncation_is_asked(runtime_tokenizer: ClipTokenizer, reference) -> None:
    assert runtime_tokenizer.token_count(LONG_PROMPT) > 32
    with pytest.raises(PromptError, match=r"tokens; the model reads at most 32"):
        runtime_tokenizer.encode([LONG_PROMPT])
    ids, mask = runtime_tokenizer.encode([LONG_PROMPT], truncate=True)
    ref = reference([LONG_PROMPT], padding="max_length", truncation=True, max_length=32)
    np.testing.assert_array_equal(ids, np.asarray(ref["input_ids"]))
    assert mask.sum() == 32 and ids[0, -1] == reference.eos_token_id


def test_exactly_32_tokens_fit(runtime_tokenizer: ClipTokenizer) -> None:
    prompt = " ".join(["liver"] * 30)  # 30 word tokens + start + end
    assert runtime_tokenizer.token_count(prompt) == 32
    _, mask = runtime_tokenizer.encode([prompt])
    assert mask.sum() == 32


@pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
def test_empty_prompts_are_rejected(bad: str) -> None:
    with pytest.raises(PromptError, match="empty prompt"):
        normalize_prompt(bad)


def test_prompt_list_rules() -> None:
    assert as_prompt_list("liver") == ["liver"]
    assert as_prompt_list(("liver", "kidney")) == ["liver", "kidney"]
    with pytest.raises(PromptError, match="no prompt"):
        as_prompt_list([])
    with pytest.raises(PromptError, match="must be strings"):
        as_prompt_list([3])  # type: ignore[list-item]


def test_normalisation_is_the_cache_key() -> None:
    assert normalize_prompt("  Left   Kidney ") == normalize_prompt("left kidney") == "left kidney"
    assert normalize_prompt("Cafe\u0301") == normalize_prompt("Café")  # NFC
