"""End to end: `medsam3_rt.load(...).segment` vs transformers' Sam3Model with SAM3's processing.

The export has the default (Meta's) text-only prompt semantics, so the reference runs
`Sam3Model.forward` with the geometry encoder's CLS token appended (`detector_forward(...,
"meta")`, proven equal to the original modules in test_prompt_semantics.py); the comparison
with Meta's own code is test_meta_reference.py.

The reference preprocesses like transformers' Sam3ImageProcessor (see test_preprocess.py for
why its torch math is spelled out), runs `Sam3Model.forward` with the CLIP tokenizer's ids,
and post-processes like `Sam3ImageProcessor.post_process_instance_segmentation` (sigmoid,
bilinear upsampling to the image size, > 0.5), keeping the highest-scoring query per prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import phantom
from medsam3_export.semantics import detector_forward

from medsam3_rt.preprocess import to_rgb


@pytest.fixture(scope="module")
def clip_tokenizer():
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer

    return bundled_clip_tokenizer()


def reference_segment(model, tokenizer, image: np.ndarray, prompts: list[str], context_length: int = 32, semantics: str = "meta"):
    rgb, is_uint8 = to_rgb(image)  # the documented intensity rule for non-uint8 inputs
    t = torch.from_numpy(np.ascontiguousarray(rgb.astype(np.uint8) if is_uint8 else rgb)).permute(2, 0, 1)[None]
    t = F.interpolate(t.contiguous(), size=(224, 224), mode="bilinear", antialias=True, align_corners=False).float()
    pixels = (t - 127.5) / 127.5
    enc = tokenizer(prompts, padding="max_length", max_length=context_length, return_tensors="pt")
    with torch.no_grad():  # the export's default, Meta's text-only semantics (test_prompt_semantics.py)
        out = detector_forward(model, enc["input_ids"], enc["attention_mask"], semantics, pixel_values=pixels.repeat(len(prompts), 1, 1, 1))
    scores = out.pred_logits.sigmoid() * out.presence_logits.sigmoid()
    best = scores.argmax(dim=1)
    rows = torch.arange(len(prompts))
    h, w = image.shape[:2]
    probs = F.interpolate(out.pred_masks[rows, best].sigmoid()[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    boxes = out.pred_boxes[rows, best] * torch.tensor([w, h, w, h])
    return (probs > 0.5).numpy(), scores[rows, best].numpy(), boxes.numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


CASES = {
    "rgb": phantom(300, 200, seed=1),
    "gray": phantom(180, 240, channels=1, seed=2),
    "odd-non-square": phantom(97, 131, seed=3),
    "square-upsampled": phantom(64, 64, seed=4),
    "large": phantom(700, 520, seed=5),
    "uint16": phantom(150, 170, channels=1, dtype=np.uint16, seed=6),
    "ct-float": phantom(128, 128, channels=1, dtype=np.float32, seed=7),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("prompts", [["polyp"], ["liver", "left kidney, upper pole"]])
def test_segment_matches_transformers(segmenter, tiny_reference, clip_tokenizer, case: str, prompts: list[str]) -> None:
    image = CASES[case]
    res = segmenter.segment(image, prompts)
    masks, scores, boxes = reference_segment(tiny_reference, clip_tokenizer, image, prompts)
    assert res.masks.shape == masks.shape == (len(prompts), *image.shape[:2])
    for p in range(len(prompts)):
        assert iou(res.masks[p], masks[p]) >= 0.999, (case, prompts[p], iou(res.masks[p], masks[p]))
    np.testing.assert_allclose(res.scores, scores, atol=1e-4)
    np.testing.assert_allclose(res.boxes, boxes, atol=0.05 * max(image.shape[:2]) / 100)


def test_result_fields_and_min_score(segmenter) -> None:
    image = CASES["rgb"]
    res = segmenter.segment(image, ["liver", "kidney"])
    assert res.masks.dtype == bool and res.scores.dtype == np.float32 and res.boxes.shape == (2, 4)
    assert res.label_map.dtype == np.uint8 and set(np.unique(res.label_map)) <= {0, 1, 2}
    assert set(res.timings_ms) == {"text", "preprocess", "backbone", "detector", "postprocess"}
    cut = float(res.scores.min()) + 1e-6
    high = segmenter.segment(image, ["liver", "kidney"], min_score=cut)
    weak = int(np.argmin(res.scores))
    assert not high.masks[weak].any() and not (high.label_map == weak + 1).any()
    np.testing.assert_allclose(high.scores, res.scores)  # scores are always reported
    single = segmenter.segment(image, "liver")
    assert single.prompts == ("liver",) and single.masks.shape == (1, *image.shape[:2])


def test_prompt_cache_skips_the_text_encoder(tiny_export) -> None:
    import medsam3_rt

    seg = medsam3_rt.load(tiny_export, "ort-cpu")
    cache = seg.model.text_cache
    seg.segment(CASES["gray"], ["Liver", "kidney"])
    assert cache.misses == 2 and cache.hits == 0
    seg.segment(CASES["gray"], ["liver ", "KIDNEY", "spleen"])
    assert cache.hits == 2 and cache.misses == 3


def test_bad_calls_are_user_errors(segmenter) -> None:
    from medsam3_rt.errors import InputError, PromptError, UsageError

    with pytest.raises(PromptError):
        segmenter.segment(CASES["rgb"], [])
    with pytest.raises(PromptError):
        segmenter.segment(CASES["rgb"], ["liver", " "])
    with pytest.raises(UsageError, match="min_score"):
        segmenter.segment(CASES["rgb"], "liver", min_score=1.5)
    with pytest.raises(InputError):
        segmenter.segment(np.zeros((10, 10, 7), np.uint8), "liver")
