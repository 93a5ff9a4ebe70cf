"""Long streams keep memory flat; one loaded model serves several threads with unchanged results.

The 10,000-frame stream runs on a *micro* video export: the tiny preset at 56 px (fpn 64,
ViT 32 wide, 8 queries). Every frame is resized to the model's input size, so frame size does
not change the cost: the networks do. The tiny 224-px model costs ~0.35 s of CPU per frame
here with two tracked objects (an hour for 10,000 frames); the micro model runs the same
graphs, runtime code, memory bank and ORT sessions for ~15-40 ms per frame. Objects appear
on textured frames, vanish on flat ones and are forgotten, so creation, tracking, pruning
and removal all run thousands of times.
"""

from __future__ import annotations

import gc
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import TRACKER_SCORE_SHIFT, phantom
from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

import medsam3_rt
from medsam3_rt.backends import resolve
from medsam3_rt.model import Model
from medsam3_rt.segmenter import Segmenter

MICRO = {"image_size": 56, "fpn_hidden": 64, "vit_hidden": 32, "vit_mlp": 64, "detr_ffn": 64, "num_queries": 8, "tracker_mlp": 64}
FRAMES = 10_000
WARMUP = 200
RSS_GROWTH_LIMIT_MB = 50.0


@pytest.fixture(scope="module")
def micro_video_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 56-px random Sam3VideoModel (the tiny preset with MICRO overrides), exported with parity checks."""
    import torch
    from medsam3_export import export_model
    from medsam3_training.config import RandomModelConfig
    from medsam3_training.model import random_model

    ckpt = random_model(RandomModelConfig(preset="tiny", overrides=MICRO, video=True, seed=1, init_std=0.1))
    ckpt.video.eval()
    with torch.no_grad():
        ckpt.video.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias -= TRACKER_SCORE_SHIFT
    out = tmp_path_factory.mktemp("micro") / "micro-video-export"
    export_model(ckpt, out)
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


def scene(t: int, side: int = 32) -> np.ndarray:
    """40 textured frames with a drifting bright disc, then 10 flat frames: objects come and go."""
    if t % 50 >= 40:
        return np.full((side, side, 3), 30, np.uint8)
    frame = phantom(side, side, seed=1).copy()
    yy, xx = np.mgrid[:side, :side]
    frame[(yy - side // 2) ** 2 + (xx - side // 4 - (t % 20) * side // 40) ** 2 < (side // 6) ** 2] = 230
    return frame


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_10000_frame_stream_keeps_memory_flat(micro_video_export: Path, record_property) -> None:
    import time

    options = medsam3_rt.StreamOptions(
        detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD, max_objects=2, forget_after=8
    )
    with medsam3_rt.load(micro_video_export, "ort-cpu") as seg:
        stream = seg.stream("liver", options=options)
        m = seg.manifest
        s = stream.settings
        per_object = (stream.max_cond + s.max_object_pointers_in_encoder - 1) * m.dims.fpn_channels * 4 + (
            stream.max_cond + s.num_maskmem - 1
        ) * m.dims.feat_size**2 * m.dims.memory_channels * 2
        frames = [scene(t) for t in range(50)]
        for t in range(WARMUP):
            stream.push(frames[t % 50])
        gc.collect()
        rss0, objects0 = rss_mb(), len(gc.get_objects())
        t0 = time.perf_counter()
        tracked = held = 0
        peak_state = 0
        for t in range(WARMUP, FRAMES):
            result = stream.push(frames[t % 50])
            tracked += len(result.object_ids)
            held += stream.num_objects
            peak_state = max(peak_state, stream.state_nbytes())
            assert stream.num_objects <= 2
        seconds = time.perf_counter() - t0
        gc.collect()
        rss1, objects1 = rss_mb(), len(gc.get_objects())
        created = stream.next_object_id
    record_property("long_stream", {"frames": FRAMES, "s": round(seconds, 1), "rss_mb": [round(rss0, 1), round(rss1, 1)]})
    print(f"\n{FRAMES} frames: {seconds:.0f} s ({seconds / (FRAMES - WARMUP) * 1e3:.1f} ms/frame), RSS {rss0:.1f} -> {rss1:.1f} MB, "
          f"{created} objects created, {held} object-frames in memory, {tracked} shown, "
          f"python objects {objects0} -> {objects1}")  # fmt: skip
    # objects must be created, carried in the memory bank and forgotten all along, or nothing is guarded
    assert created > 100 and held > FRAMES and tracked > 0, (created, held, tracked)
    assert peak_state <= 2 * per_object, (peak_state, per_object)
    assert stream.frame_index == FRAMES
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_MB, f"RSS grew {rss1 - rss0:.1f} MB over {FRAMES - WARMUP} frames"
    assert objects1 - objects0 < 2_000, f"{objects1 - objects0} more Python objects after {FRAMES - WARMUP} frames"


# -- threads ------------------------------------------------------------------------------------


def _same_segment(a, b) -> None:
    np.testing.assert_array_equal(a.label_map, b.label_map)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.boxes, b.boxes)


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
def test_one_model_segments_from_many_threads(tiny_export: Path, backend: str) -> None:
    """Shared sessions (ORT) / the infer-request pool (OpenVINO) and a 2-entry text cache under contention."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    images = [phantom(60 + 10 * k, 80 - 5 * k, seed=k) for k in range(3)]
    prompt_sets = [["liver"], ["left kidney", "spleen"], ["polyp", "liver", "gallbladder"], ["spleen"]]
    jobs = [(i % 3, p) for i in range(12) for p in [prompt_sets[i % 4]]]
    model = Model(tiny_export, resolve(backend), cache_size=2)  # evictions while threads read
    with Segmenter(model) as seg:
        reference = [seg.segment(images[i], p) for i, p in jobs]
        model.text_cache.clear()
        barrier = threading.Barrier(4)

        def work(k: int):
            barrier.wait()
            return [(j, seg.segment(images[jobs[j][0]], jobs[j][1])) for j in range(k, len(jobs), 4)]

        with ThreadPoolExecutor(4) as pool:
            results = [r for chunk in pool.map(work, range(4)) for r in chunk]
    assert len(results) == len(jobs)
    for j, res in results:
        _same_segment(res, reference[j])


def _run_stream(seg, prompts: list[str], frames: list[np.ndarray], options) -> list:
    stream = seg.stream(prompts, options=options)
    return [stream.push(f) for f in frames]


def test_parallel_streams_equal_sequential(micro_video_export: Path) -> None:
    options = medsam3_rt.StreamOptions(detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD)
    videos = {
        "a": (["liver"], [scene(t) for t in range(14)]),
        "b": (["liver", "kidney"], [scene(t + 30) for t in range(14)]),
        "c": (["kidney"], [np.ascontiguousarray(np.rot90(scene(t, 40))) for t in range(14)]),
    }
    with medsam3_rt.load(micro_video_export, "ort-cpu") as seg:
        one_by_one = {k: _run_stream(seg, p, f, options) for k, (p, f) in videos.items()}
        barrier = threading.Barrier(len(videos))

        def work(key: str):
            barrier.wait()
            return key, _run_stream(seg, *videos[key], options)

        with ThreadPoolExecutor(len(videos)) as pool:
            parallel = dict(pool.map(work, videos))
    assert sum(len(fr.object_ids) for frames in one_by_one.values() for fr in frames) > 0, "nothing tracked: the test would be vacuous"
    for key, frames in one_by_one.items():
        for fa, fb in zip(frames, parallel[key], strict=True):
            np.testing.assert_array_equal(fa.object_ids, fb.object_ids)
            np.testing.assert_array_equal(fa.masks, fb.masks)
            np.testing.assert_array_equal(fa.scores, fb.scores)
            np.testing.assert_array_equal(fa.tracker_scores, fb.tracker_scores)
            np.testing.assert_array_equal(fa.label_map, fb.label_map)
