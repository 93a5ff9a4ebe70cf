"""Golden files of the streaming merge policy: real inputs recorded from a stream, and the decisions.

Each scenario is two files in tests/golden/tracker_policy/: NAME.json (the policy config, and
per frame the scalar inputs and the expected decisions) and NAME.masks (the mask inputs as
little-endian int16 fixed point, value / 1024 = logit: exact in float32, so Python and C++
read identical numbers; 2 bytes a pixel keeps the files small). Expected masks are checked
by the SHA-256 of their float32 bytes.

The inputs are what `Stream.observer` saw on the tiny video model (tests/conftest.py) for a
synthetic sequence in which objects appear, vanish, overlap and come back; the expected
decisions are the Python policy's on the fixed-point inputs, and the discrete ones equal the
live stream's (test_tracker_policy.py checks that on every run that has the tiny export).

Regenerate (needs torch + transformers for the tiny export; see tests/tracker/test_tracker_policy.py):
    MEDSAM3RT_REGENERATE_GOLDEN=1 python -m pytest -q tests/tracker/test_tracker_policy.py -k regenerate
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt.tracker import hotstart, policy
from medsam3_rt.tracker.streaming import MergeRecord

GOLDEN = Path(__file__).parent / "golden" / "tracker_policy"
SCALE = 1024.0  # fixed point: logit = int16 / SCALE
LIMIT = 32767 / SCALE

PROMPTS = ["liver", "kidney"]
# Frames of test_streaming_parity.synthetic_sequence (objects appear, vanish on blank frames, return).
KINDS = ["blank", "blob1", "blob1", "blob2", "blank", "noise", "blob1", "blob2"]


@dataclass(frozen=True)
class Scenario:
    name: str
    options: dict[str, Any]  # StreamOptions fields
    config: dict[str, Any]  # PolicyConfig fields changed after the stream opens (exercise more rules)
    kinds: tuple[str, ...] = tuple(KINDS)  # the frames streamed


SCENARIOS = (
    # transformers' rules with the parity test's thresholds
    Scenario("parity", {"policy": "transformers"}, {}),
    # limits and re-anchoring: a cap on objects, forgetting, reconditioning every other frame on
    # detection masks (the random model's scores are low, so the confidence bars are lowered)
    Scenario(
        "limits",
        {"policy": "transformers", "max_objects": 3, "forget_after": 2},
        {"recondition_every_nth_frame": 2, "recondition_on_trk_masks": False, "high_conf_thresh": 0.1, "high_iou_thresh": 0.3},
    ),
    # Meta's track management: a short hot start so that young unmatched / duplicate tracks are
    # removed within the recording, a small cap so that stale tracks are evicted for new ones,
    # and hot-start keep-alive counters that start low with suppression outside the hot start on,
    # so that unconfirmed objects are hidden
    Scenario(
        "meta",
        {"policy": "meta", "max_objects": 3},
        {
            "hotstart_delay": 4,
            "hotstart_unmatch_thresh": 2,
            "hotstart_dup_thresh": 2,
            "init_trk_keep_alive": 0,
            "suppress_unmatched_only_within_hotstart": False,
        },
        ("blank", "blob1", "blob1", "blob2", "noise", "blank", "blob1", "noise", "blob2", "blob2", "blank", "blob1"),
    ),
    # a track unmatched on its first tracked frame is removed at once: Meta's last-occluded value
    # for it is ALWAYS_OCCLUDED (it yields to any overlap)
    Scenario("meta_first_frame", {"policy": "meta"}, {"hotstart_delay": 4, "hotstart_unmatch_thresh": 1}),
)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()


def quantize(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -LIMIT, LIMIT) * SCALE).astype("<i2")


def dequantize(q: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) / np.float32(SCALE)).astype(np.float32)


def ints(a: np.ndarray) -> list[int]:
    return [int(v) for v in a]


def hotstart_json(s: hotstart.HotstartState) -> dict[str, Any]:
    """The hot-start state as JSON, every table sorted by object id (C++ writes the same)."""
    return {
        "first_frame": [[int(o), int(f)] for o, f in sorted(s.first_frame.items())],
        "unmatched_frames": [[int(o), ints(f)] for o, f in sorted(s.unmatched_frames.items())],
        "keep_alive": [[int(o), int(k)] for o, k in sorted(s.keep_alive.items())],
        "overlap_frames": [[int(a), int(b), ints(f)] for (a, b), f in sorted(s.overlap_frames.items())],
        "removed": sorted(int(o) for o in s.removed),
    }


def hotstart_from_json(j: dict[str, Any]) -> hotstart.HotstartState:
    return hotstart.HotstartState(
        first_frame={o: f for o, f in j["first_frame"]},
        unmatched_frames={o: list(f) for o, f in j["unmatched_frames"]},
        keep_alive={o: k for o, k in j["keep_alive"]},
        overlap_frames={(a, b): list(f) for a, b, f in j["overlap_frames"]},
        removed=set(j["removed"]),
    )


def decide(cfg: policy.PolicyConfig, frame: dict[str, Any]) -> dict[str, Any]:
    """The Python policy's decisions on one recorded frame, in the golden file's JSON form.

    Mode "meta" adds the hot-start decisions and the hot-start state after the frame, pruned to
    the objects still tracked (as `Stream` does before the next frame).
    """
    meta = cfg.mode == "meta"
    state = hotstart_from_json(frame["hotstart"]) if meta else None
    d = policy.merge(frame["det"], frame["tracks"], frame["trk_masks"], frame["trk_scores"], frame["t"], frame["next_id"], cfg, state)
    a = d.association
    counts, removed = policy.forget(frame["forget_ids"], frame["forget_counts"], frame["shown_ids"], cfg.forget_after)
    extra: dict[str, Any] = {}
    if meta:
        assert d.hotstart is not None
        gone = {*ints(d.removed), *ints(d.evicted)}
        alive = [o for o in (*ints(frame["tracks"].obj_ids), *ints(d.new_obj_ids)) if o not in gone]
        after = hotstart.prune(d.hotstart, alive, frame["t"], cfg.hotstart)
        extra = {
            "hotstart_removed": ints(d.removed),
            "evicted": ints(d.evicted),
            "hidden": ints(d.hidden),
            "hotstart_after": hotstart_json(after),
        }
    return {
        "new": ints(a.new),
        "unmatched": ints(a.unmatched),
        "matched": ints(a.matched),
        "high_conf": sorted([int(k), int(v)] for k, v in a.high_conf.items()),
        "new_dets": ints(d.new_dets),
        "new_obj_ids": ints(d.new_obj_ids),
        "recond": sorted([int(k), int(v)] for k, v in d.recond.items()),
        "keep_alive": ints(d.keep_alive),
        "last_occluded": ints(d.last_occluded),
        "rerun": ints(d.rerun),
        "memory_scores": [float(v) for v in d.memory_scores],
        "shown_sha256": sha(d.shown),
        "memory_sha256": sha(d.memory_masks),
        "empty_frames": ints(counts),
        "removed": [bool(v) for v in removed],
        **extra,
    }


DISCRETE = ("new", "unmatched", "matched", "high_conf", "new_dets", "new_obj_ids", "recond", "keep_alive", "last_occluded", "rerun")


def live_decisions(r: MergeRecord) -> dict[str, Any]:
    """The discrete decisions a live stream made (to compare with the golden file's)."""
    d, a = r.decision, r.decision.association
    extra: dict[str, Any] = {}
    if d.hotstart is not None:  # mode "meta"
        extra = {"hotstart_removed": ints(d.removed), "evicted": ints(d.evicted), "hidden": ints(d.hidden)}
    return {
        "new": ints(a.new),
        "unmatched": ints(a.unmatched),
        "matched": ints(a.matched),
        "high_conf": sorted([int(k), int(v)] for k, v in a.high_conf.items()),
        "new_dets": ints(d.new_dets),
        "new_obj_ids": ints(d.new_obj_ids),
        "recond": sorted([int(k), int(v)] for k, v in d.recond.items()),
        "keep_alive": ints(d.keep_alive),
        "last_occluded": ints(d.last_occluded),
        "rerun": ints(d.rerun),
        "empty_frames": ints(r.empty_frames),
        "removed": [bool(v) for v in r.removed],
        **extra,
    }


def record(export_dir: Path, scenario: Scenario) -> tuple[policy.PolicyConfig, list[MergeRecord]]:
    """Stream the synthetic sequence through the tiny video export and keep every merge."""
    from conftest import phantom
    from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

    import medsam3_rt

    options = medsam3_rt.StreamOptions(
        detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD, **scenario.options
    )
    records: list[MergeRecord] = []
    h, w = 96, 112
    rng = np.random.default_rng(0)
    with medsam3_rt.load(export_dir, "ort-cpu") as seg, seg.stream(PROMPTS, options=options) as stream:
        stream.policy = replace(stream.policy, **scenario.config)
        stream.observer = records.append
        for kind in scenario.kinds:
            if kind == "blank":
                frame = np.full((h, w, 3), 30, np.uint8)
            elif kind == "noise":
                frame = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            else:
                frame = phantom(h, w, seed=int(kind[-1]))
            stream.push(frame)
        return stream.policy, records


def write(scenario: Scenario, cfg: policy.PolicyConfig, records: list[MergeRecord], folder: Path = GOLDEN) -> None:
    """NAME.json + NAME.masks from recorded merges (expected decisions from the fixed-point inputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs: list[bytes] = []
    offset = 0

    def put(x: np.ndarray) -> dict[str, Any]:
        nonlocal offset
        q = quantize(x)
        blobs.append(q.tobytes())
        ref = {"offset": offset, "shape": list(q.shape)}
        offset += q.size
        return ref

    meta = cfg.mode == "meta"
    fields = ("obj_ids", "prompt_ids", "last_occluded", "keep_alive", *(("first_frame",) if meta else ()))
    state = hotstart_json(hotstart.HotstartState())  # the hot-start state before each frame (mode "meta")
    frames = []
    for r in records:
        entry = {
            "t": r.frame_index,
            "next_id": r.next_id,
            "det": {
                "masks": put(r.detections.masks),
                "scores": [float(v) for v in r.detections.scores],
                "prompt_ids": ints(r.detections.prompt_ids),
            },
            "tracks": {f: ints(getattr(r.tracks, f)) for f in fields},
            "trk_masks": put(r.trk_masks),
            "trk_scores": [float(v) for v in r.trk_score_logits.astype(np.float32)],
            "forget_ids": ints(r.forget_ids),
            "forget_counts": ints(r.forget_counts),
            "shown_ids": ints(r.shown_ids),
            "live": live_decisions(r),
        }
        if meta:
            entry["hotstart"] = state
            if r.decision.hotstart is not None:  # the stream pruned it in place after the frame
                state = hotstart_json(r.decision.hotstart)
        frames.append(entry)
    doc = {"scenario": scenario.name, "mask_format": "int16 little-endian, logit = value / 1024", "config": cfg.to_json(), "frames": frames}
    blob = b"".join(blobs)
    (folder / f"{scenario.name}.masks").write_bytes(blob)
    loaded_cfg, loaded = load(scenario.name, folder, doc=doc, blob=blob)
    for entry, frame in zip(frames, loaded, strict=True):
        entry["expected"] = decide(loaded_cfg, frame)
    (folder / f"{scenario.name}.json").write_text(json.dumps(doc, indent=1) + "\n")


def load(
    name: str, folder: Path = GOLDEN, *, doc: dict[str, Any] | None = None, blob: bytes | None = None
) -> tuple[policy.PolicyConfig, list[dict[str, Any]]]:
    """The config and the frames of a golden scenario, inputs as policy objects."""
    doc = doc if doc is not None else json.loads((folder / f"{name}.json").read_text())
    raw = np.frombuffer(blob if blob is not None else (folder / f"{name}.masks").read_bytes(), "<i2")

    def get(ref: dict[str, Any]) -> np.ndarray:
        n = int(np.prod(ref["shape"]))
        return dequantize(raw[ref["offset"] : ref["offset"] + n]).reshape(ref["shape"])

    frames = []
    for f in doc["frames"]:
        det = policy.Detections(
            get(f["det"]["masks"]), np.array(f["det"]["scores"], np.float32), np.array(f["det"]["prompt_ids"], np.int64)
        )
        tr = f["tracks"]
        tracks = policy.TrackTable(
            *(np.array(tr[k], np.int64) for k in ("obj_ids", "prompt_ids", "last_occluded", "keep_alive")),
            first_frame=np.array(tr["first_frame"], np.int64) if "first_frame" in tr else None,
        )
        frames.append(
            {
                **f,
                "det": det,
                "tracks": tracks,
                "trk_masks": get(f["trk_masks"]),
                "trk_scores": np.array(f["trk_scores"], np.float32),
                "forget_ids": np.array(f["forget_ids"], np.int64),
                "forget_counts": np.array(f["forget_counts"], np.int64),
                "shown_ids": np.array(f["shown_ids"], np.int64),
            }
        )
    return policy.PolicyConfig.from_json(doc["config"]), frames
