"""Streaming: object ids and masks per frame equal transformers' Sam3VideoModel (streaming mode).

The reference runs frame by frame (`Sam3VideoModel.forward(inference_session, frame=...)`)
with NMS and hole filling provided by `hub_kernel_standin` (transformers needs a hub kernel
for them), and its video processor's post-processing (upsampling, dropping empty masks,
per-prompt object-wise non-overlap by tracker score) is applied with the processor's own
methods. The synthetic sequence makes objects appear, vanish on flat frames, come back,
and creates several objects per prompt; the test checks that this really happens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import phantom

import medsam3_rt
from medsam3_rt.manifest import Preprocess
from medsam3_rt.preprocess import pixel_values

PROMPTS = ["liver", "kidney"]
KINDS = ["blank", "blob1", "blob1", "blob2", "blank", "noise", "blob1", "blob2", "blank", "blob3", "blob3", "bright"]
DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD = 0.24, 0.25  # between the random model's flat- and textured-frame scores


def synthetic_sequence(h: int = 180, w: int = 200) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = []
    for kind in KINDS:
        if kind == "blank":
            frames.append(np.full((h, w, 3), 30, np.uint8))
        elif kind == "bright":
            frames.append(np.full((h, w, 3), 230, np.uint8))
        elif kind == "noise":
            frames.append((rng.random((h, w, 3)) * 255).astype(np.uint8))
        else:
            frames.append(phantom(h, w, seed=int(kind[-1])))
    return frames


def reference_run(hf_dir: Path, frames: list[np.ndarray]) -> list[dict[int, tuple[np.ndarray, int]]]:
    """Per frame: obj_id -> (mask at frame size, prompt index), as transformers returns them."""
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer
    from transformers import Sam3VideoModel
    from transformers.models.sam3_video import modeling_sam3_video as msv
    from transformers.models.sam3_video.processing_sam3_video import Sam3VideoProcessor

    model = Sam3VideoModel.from_pretrained(hf_dir, local_files_only=True).eval()
    model.score_threshold_detection, model.new_det_thresh = DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD
    processor = object.__new__(Sam3VideoProcessor)  # its post-processing methods need no tokenizer/torchvision
    tok = bundled_clip_tokenizer()
    h, w = frames[0].shape[:2]
    session = msv.Sam3VideoInferenceSession(video_height=h, video_width=w, inference_device="cpu", dtype=torch.float32)
    for prompt in PROMPTS:
        pid = session.add_prompt(prompt)
        enc = tok(prompt, padding="max_length", max_length=32, return_tensors="pt")
        session.prompt_input_ids[pid], session.prompt_attention_masks[pid] = enc["input_ids"], enc["attention_mask"]
    pre = Preprocess(model.config.detector_config.vision_config.backbone_config.image_size)
    results = []
    for frame in frames:
        with torch.no_grad():
            out = model(inference_session=session, frame=torch.from_numpy(pixel_values(frame, pre))[0])
        ids = sorted(out.obj_id_to_mask)
        if not ids:
            results.append({})
            continue
        low = torch.cat([out.obj_id_to_mask[i] for i in ids])
        masks = F.interpolate(low[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0
        keep = masks.any(dim=(1, 2))
        ids = [i for i, k in zip(ids, keep.tolist(), strict=True) if k]
        masks = masks[keep]
        scores = torch.tensor([out.obj_id_to_tracker_score[i] for i in ids])
        prompt_ids = [session.obj_id_to_prompt_id[i] for i in ids]
        if len(ids) > 1:
            masks = (
                processor._apply_object_wise_non_overlapping_constraints(
                    masks[:, None], scores[:, None], background_value=0, prompt_ids=prompt_ids
                )[:, 0]
                > 0
            )
        results.append({i: (m.numpy(), p) for i, m, p in zip(ids, masks, prompt_ids, strict=True)})
    return results


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture()
def hub_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub_kernel_standin import CvUtilsStandIn
    from transformers.models.sam3_video import modeling_sam3_video as msv

    monkeypatch.setattr(msv, "cv_utils_kernel", CvUtilsStandIn())


def test_stream_matches_sam3_video_model(tiny_video_hf_dir: Path, tiny_video_export: Path, hub_kernels: None) -> None:
    frames = synthetic_sequence()
    ref = reference_run(tiny_video_hf_dir, frames)
    # the sequence must exercise the merge: appearance, disappearance, several objects per prompt
    seen = [set(r) for r in ref]
    assert not seen[0] and seen[1], "objects must appear after the first frame"
    assert any(seen[i] - seen[i + 1] for i in range(len(seen) - 1)), "some object must vanish"
    assert any(len(seen[i + 1] - seen[i]) and seen[i] for i in range(len(seen) - 1)), "new objects must join existing ones"
    assert any(sum(p == 0 for _, p in r.values()) >= 2 for r in ref), "a prompt must have several objects"

    seg = medsam3_rt.load(tiny_video_export, "ort-cpu")
    options = medsam3_rt.StreamOptions(
        policy="transformers", detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD
    )
    with seg.stream(PROMPTS, options=options) as stream:
        for t, (frame, expected) in enumerate(zip(frames, ref, strict=True)):
            got = stream.push(frame)
            assert got.frame_index == t
            assert got.object_ids.tolist() == sorted(expected), f"frame {t}: ids {got.object_ids.tolist()} vs {sorted(expected)}"
            for obj_id, prompt_id, mask in zip(got.object_ids, got.prompt_ids, got.masks, strict=True):
                ref_mask, ref_prompt = expected[int(obj_id)]
                assert prompt_id == ref_prompt
                assert iou(mask, ref_mask) >= 0.99, f"frame {t} object {obj_id}: IoU {iou(mask, ref_mask):.4f}"
            labels = np.zeros(frame.shape[:2], np.uint8)
            assert got.label_map.shape == labels.shape and set(np.unique(got.label_map)) <= {0, 1, 2}


def test_plain_reference_without_hub_kernels(tiny_video_hf_dir: Path, tiny_video_export: Path) -> None:
    """Without the hub kernel transformers skips NMS and hole filling; the switches reproduce that."""
    frames = synthetic_sequence()[:4]  # without NMS objects pile up: the reference slows quadratically
    ref = reference_run(tiny_video_hf_dir, frames)
    seg = medsam3_rt.load(tiny_video_export, "ort-cpu")
    options = medsam3_rt.StreamOptions(
        policy="transformers",
        nms=False,
        fill_holes=False,
        detection_threshold=DETECTION_THRESHOLD,
        new_object_threshold=NEW_OBJECT_THRESHOLD,
    )
    stream = seg.stream(PROMPTS, options=options)
    for t, (frame, expected) in enumerate(zip(frames, ref, strict=True)):
        got = stream.push(frame)
        assert got.object_ids.tolist() == sorted(expected), f"frame {t}"
        # without NMS many near-identical detections overlap; compare the union per prompt
        for p in range(len(PROMPTS)):
            ours = got.masks[got.prompt_ids == p].any(axis=0) if len(got.masks) else np.zeros(frame.shape[:2], bool)
            theirs = [m for m, q in expected.values() if q == p]
            theirs = np.any(theirs, axis=0) if theirs else np.zeros(frame.shape[:2], bool)
            assert iou(ours, theirs) >= 0.99, f"frame {t} prompt {p}"
