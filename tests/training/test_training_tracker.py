"""The tracker recipe learns: loss falls and held-out propagation Dice rises (tiny SAM3, real MRI).

Data: Debian's mricron-data (Colin27 T1 skull-stripped + AAL atlas), axial slices, clips of
4 slices 3 mm apart, concepts cerebellum / frontal lobe / temporal lobe. Model: the `tiny`
preset with a random tracker. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")

from medsam3_rt.errors import InputError  # noqa: E402

TEMPLATES = Path("/usr/share/mricron/templates")
CONCEPTS = ("cerebellum", "frontal lobe", "temporal lobe")
pytestmark = pytest.mark.skipif(not (TEMPLATES / "aal.nii.gz").is_file(), reason="needs mricron-data (apt-get install mricron-data)")


@pytest.fixture(scope="module")
def label_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AAL regions grouped into three lobes, as a label NIfTI on the T1's grid."""
    from medsam3_training.data.mricron import aal_groups, read_aal_names

    groups = aal_groups(read_aal_names(TEMPLATES / "aal.nii.txt"))
    aal = nib.load(TEMPLATES / "aal.nii.gz")
    a = np.asarray(aal.dataobj)
    lab = np.zeros(a.shape, np.uint8)
    for value, concept in enumerate(CONCEPTS, 1):
        lab[np.isin(a, groups[concept])] = value
    out = tmp_path_factory.mktemp("tracker-data") / "lobes.nii.gz"
    nib.save(nib.Nifti1Image(lab, aal.affine), out)
    return out


def _config(label_volume: Path, out: Path, steps: int, validate_every: int):
    from medsam3_training.tracker_config import tracker_config

    return tracker_config(
        {
            "output_dir": str(out),
            "model": {"random": {"preset": "tiny", "video": True, "seed": 0, "init_std": 0.1}},
            "data": {
                "volumes": [
                    {
                        "image": str(TEMPLATES / "ch2bet.nii.gz"),
                        "label": str(label_volume),
                        "labels": {i: c for i, c in enumerate(CONCEPTS, 1)},
                        "slice_step": 3,
                    }
                ],
                "val_fraction": 0.3,
            },
            "clip": {"length": 4, "stride": 2, "split_block": 4},
            "train": {
                "steps": steps,
                "lr": 3e-4,
                "warmup_steps": 5,
                "validate_every": validate_every,
                "log_every": 5,
                "grad_clip": 1.0,
                "dice": 5.0,
            },
        }
    )


def test_volume_clips_follow_the_label_dictionary(label_volume: Path) -> None:
    from medsam3_training.tracker_data import split_clips, volume_clips

    labels = {i: c for i, c in enumerate(CONCEPTS, 1)}
    clips = volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, labels, length=4, stride=2, block=4, step=3)
    assert {c.concept for c in clips} == set(CONCEPTS)
    for c in clips:
        assert c.frames.shape[0] == c.masks.shape[0] == 4 and c.frames.dtype == np.uint8
        assert c.masks[0].sum() >= 50  # the prompt frame shows the concept
    train, val = split_clips(clips, 0.3, 42)
    assert val and train
    assert not {c.group for c in train} & {c.group for c in val}
    with pytest.raises(InputError, match="label 2 is not in the label-to-text dictionary"):
        volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, {1: "cerebellum"}, length=4, step=3)


def test_clips_take_the_sides_of_an_image_runs_split(label_volume: Path, tmp_path: Path) -> None:
    """With `heldout`, held-out blocks of the detector's split hold their clips out of training."""
    from medsam3_training.config import ConfigError
    from medsam3_training.tracker_config import HeldoutBlocks
    from medsam3_training.tracker_data import heldout_slices, split_clips, volume_clips

    split = tmp_path / "split.json"
    val = ["colin27:axial:0004", "colin27:axial:0005", "colin27:axial:0009"]  # slices 40-59 and 90-99
    train = [f"colin27:axial:{b:04d}" for b in range(19) if f"colin27:axial:{b:04d}" not in val]
    split.write_text(json.dumps({"datasets": {"colin27": {"train": train, "val": val}}}))
    held = heldout_slices(split, "colin27", "colin27", "axial", 10, 181)
    assert held == frozenset([*range(40, 60), *range(90, 100)])
    labels = {i: c for i, c in enumerate(CONCEPTS, 1)}
    spec = HeldoutBlocks(str(split), "colin27", "colin27", 10)
    clips = volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, labels, length=4, stride=1, step=3, heldout=spec)
    tr, va = split_clips(clips, 0.3, 42)
    assert tr and va and len(tr) + len(va) == len(clips)
    val_names = {c.name for c in va}
    for c in clips:  # frames are slices 3 * (start + k)
        start = int(c.name.rsplit(":", 1)[1])
        inside = [3 * (start + k) in held for k in range(4)]
        assert all(inside) if c.name in val_names else not any(inside), c.name
    every = volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, labels, length=4, stride=1, step=3)
    assert len(every) > len(clips)  # clips straddling a block boundary of the split are dropped
    with pytest.raises(ConfigError, match="no group of volume 'colin27' along the coronal axis"):
        volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, labels, axis="coronal", length=4, step=3, heldout=spec)
    with pytest.raises(ConfigError, match="cannot read dataset 'other'"):
        heldout_slices(split, "other", "colin27", "axial", 10, 181)


def test_tracker_learns_to_propagate_and_resumes(label_volume: Path, tmp_path: Path) -> None:
    import dataclasses

    from medsam3_training.tracker_trainer import train_tracker

    out = tmp_path / "run"
    cfg = _config(label_volume, out, steps=160, validate_every=40)
    result = train_tracker(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=120)))
    resumed = train_tracker(cfg, resume=True)
    assert resumed.steps == 160

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert len(rows) == 160 // 5
    assert np.mean(losses[-8:]) < np.mean(losses[:4]), "training loss (last 40 steps vs first 20) did not fall"
    # the held-out loss, on the same clips before and after: a fair comparison
    initial_loss = resumed.history[0]["loss"]
    assert resumed.history[-1]["loss"] < 0.9 * initial_loss, [round(h["loss"], 3) for h in resumed.history]

    val = [json.loads(line) for line in (out / "validation.jsonl").open()]
    assert [v["step"] for v in val] == [40, 80, 120, 160]
    assert [h["step"] for h in resumed.history] == [0, 40, 80, 120, 160]
    best = max(v["dice"] for v in val)
    assert best == pytest.approx(resumed.best_dice)
    assert best > result.initial_dice + 20, f"held-out propagation Dice {result.initial_dice:.1f} -> best {best:.1f}"
    # best/ is a Sam3VideoModel folder that export takes; its tracker reproduces the best Dice
    from medsam3_export import load_checkpoint
    from medsam3_training.tracker_data import clip_tensors, split_clips
    from medsam3_training.tracker_model import TrackerTrainingModel, propagation_dice
    from medsam3_training.tracker_trainer import load_clips

    ck = load_checkpoint(out / "best")
    assert ck.video is not None
    model = TrackerTrainingModel(ck.video).eval()
    _, val_clips = split_clips(load_clips(cfg), cfg.data.val_fraction, cfg.data.split_seed)
    per: dict[str, list[float]] = {}
    with torch.no_grad():
        for clip in val_clips:
            px, mk = clip_tensors(clip, model.image_size, model.low_res_size())
            per.setdefault(clip.concept, []).append(propagation_dice(model(px, mk[:1]).object(0), mk)[0])
    assert np.mean([np.mean(v) for v in per.values()]) == pytest.approx(best, abs=0.5)


def test_resume_without_a_run_is_one_clear_error(label_volume: Path, tmp_path: Path) -> None:
    from medsam3_training.tracker_trainer import train_tracker

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    cfg = _config(label_volume, tmp_path / "run", steps=2, validate_every=1)
    with pytest.raises(InputError, match="not empty; pass --resume"):
        train_tracker(cfg)
    with pytest.raises(InputError, match="nothing to resume"):
        train_tracker(cfg, resume=True)


def test_detector_only_checkpoints_are_refused(label_volume: Path, tmp_path: Path) -> None:
    import dataclasses

    from medsam3_training.tracker_trainer import train_tracker

    cfg = _config(label_volume, tmp_path / "run", steps=2, validate_every=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, random=dataclasses.replace(cfg.model.random, video=False)))
    with pytest.raises(InputError, match="needs a video checkpoint"):
        train_tracker(cfg)


def test_cli_runs_the_tracker_recipe_from_yaml(label_volume: Path, tmp_path: Path) -> None:
    """`medsam3-rt train --recipe tracker`: a YAML run end to end, its config listing, and one-line errors."""
    from conftest import cli

    listing = cli("train", "--recipe", "tracker", "--print-config", check=True).stdout
    assert "clip:" in listing and "length: 8" in listing and "object_score: 1.0" in listing
    (tmp_path / "lobes.nii.gz").symlink_to(label_volume)
    (tmp_path / "t1.nii.gz").symlink_to(TEMPLATES / "ch2bet.nii.gz")
    (tmp_path / "tracker.yaml").write_text(
        "output_dir: run\n"
        "model: {random: {preset: tiny, video: true, init_std: 0.1}}\n"
        "data: {volumes: [{image: t1.nii.gz, label: lobes.nii.gz, slice_step: 6,\n"
        "                  labels: {1: cerebellum, 2: frontal lobe, 3: temporal lobe}}]}\n"
        "clip: {length: 2, stride: 8}\n"
        "train: {steps: 2, validate_every: 2, log_every: 1, val_max_clips: 2}\n"
    )
    proc = cli("train", "--recipe", "tracker", "--config", str(tmp_path / "tracker.yaml"), check=True)
    assert "done: 2 steps" in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "best" / "config.json").is_file() and (tmp_path / "run" / "last" / "trainer_state.pt").is_file()
    bad = cli("train", "--recipe", "tracker", "--config", str(tmp_path / "tracker.yaml"), "--set", "clip.lenght=3")
    assert bad.returncode != 0 and "unknown key 'clip.lenght'; did you mean 'length'?" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_detector_prompted_clips(label_volume: Path, tmp_path: Path) -> None:
    """clip.prompt: detector starts each clip from the frozen detector's mask (the truth where it finds nothing)."""
    import dataclasses

    from medsam3_training.tracker_trainer import train_tracker

    cfg = _config(label_volume, tmp_path / "run", steps=2, validate_every=2)
    cfg = dataclasses.replace(
        cfg,
        clip=dataclasses.replace(cfg.clip, prompt="detector"),
        train=dataclasses.replace(cfg.train, val_max_clips=3),
    )
    result = train_tracker(cfg)
    last = result.history[-1]
    assert last["clips"] == 3 and last["truth_prompted"] < 3  # the detector prompted at least one clip
    assert 0 <= last["dice"] <= 100


def test_video_folders_give_the_same_clips_as_the_volume(label_volume: Path, tmp_path: Path) -> None:
    """Frames + label-map masks on disk (PNG) are read into the same clips as the volume they came from."""
    import cv2
    from medsam3_training.data.sources import AXES, load_volume, take_slice, volume_to_uint8
    from medsam3_training.tracker_data import video_clips, volume_clips

    labels = {i: c for i, c in enumerate(CONCEPTS, 1)}
    vol = volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, labels, length=4, stride=4, block=8, step=6)

    t1 = volume_to_uint8(load_volume(TEMPLATES / "ch2bet.nii.gz")[0], None)
    lab = load_volume(label_volume)[0]
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    for k, i in enumerate(range(0, t1.shape[AXES["axial"]], 6)):
        cv2.imwrite(str(tmp_path / "frames" / f"f{k:03d}.png"), take_slice(t1, "axial", i))
        cv2.imwrite(str(tmp_path / "masks" / f"f{k:03d}.png"), take_slice(lab, "axial", i).astype(np.uint8))
    vid = video_clips(tmp_path / "frames", tmp_path / "masks", labels, length=4, stride=4, block=8)
    assert [(c.concept, c.name.split(":")[-1]) for c in vid] == [(c.concept, c.name.split(":")[-1]) for c in vol]
    for a, b in zip(vid, vol):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    (tmp_path / "masks" / "f000.png").unlink()
    with pytest.raises(InputError, match="f000.png: no mask named f000"):
        video_clips(tmp_path / "frames", tmp_path / "masks", labels)


def test_objects_of_one_position_propagate_together_as_each_alone(label_volume: Path) -> None:
    """clip.objects > 1 batches the concepts of one clip position; each object's output equals its own run."""
    from medsam3_export import random_checkpoint
    from medsam3_training.tracker_data import clip_tensors, group_clips, volume_clips
    from medsam3_training.tracker_model import TrackerTrainingModel

    labels = {i: c for i, c in enumerate(CONCEPTS, 1)}
    clips = volume_clips(TEMPLATES / "ch2bet.nii.gz", label_volume, labels, length=3, stride=6, block=4, step=3)
    groups = group_clips(clips, 2)
    assert sorted(c.name for g in groups for c in g) == sorted(c.name for c in clips)
    assert all(len(g) <= 2 and all(c.frames is g[0].frames or np.array_equal(c.frames, g[0].frames) for c in g) for g in groups)
    group = next(g for g in groups if len(g) == 2)
    assert group[0].concept != group[1].concept
    model = TrackerTrainingModel(random_checkpoint("tiny", video=True, seed=0, init_std=0.1).video).eval()
    tensors = [clip_tensors(c, model.image_size, model.low_res_size()) for c in group]
    px = tensors[0][0]
    with torch.no_grad():
        together = model(px, torch.cat([mk[:1] for _, mk in tensors]))
        assert together.objects == 2
        for i, (_, mk) in enumerate(tensors):
            alone = model(px, mk[:1]).object(0)
            both = together.object(i)
            for a, b in zip(alone.low_res + alone.score, both.low_res + both.score, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_local_memory_init_reads_the_memory_where_it_was_written() -> None:
    """The memory cross-attention starts peaked at each position's own location; the image paths start scaled down."""
    from medsam3_export import random_checkpoint
    from medsam3_export.graphs.tracker import TrackerStepGraph
    from medsam3_training.tracker_model import local_memory_init
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import rotate_pairwise

    video = random_checkpoint("tiny", video=True, seed=0, init_std=0.1).video
    trk = video.tracker_model
    before = {
        n: trk.mask_decoder.conv_s0.weight.clone() if n == "s0" else trk.memory_encoder.feature_projection.weight.clone()
        for n in ("s0", "fp")
    }
    dims = local_memory_init(video)
    assert dims and len(dims) < trk.memory_attention.layers[0].cross_attn_image.head_dim
    torch.testing.assert_close(trk.mask_decoder.conv_s0.weight, 0.1 * before["s0"])
    torch.testing.assert_close(trk.memory_encoder.feature_projection.weight, 0.1 * before["fp"])
    graph = TrackerStepGraph(video)
    cos, sin = graph.rope_cos[0], graph.rope_sin[0]
    for layer in trk.memory_attention.layers:
        attn = layer.cross_attn_image
        q, k = (p.bias.detach() for p in (attn.q_proj, attn.k_proj))  # the constant part of queries and keys
        qr = q * cos + rotate_pairwise(q[None])[0] * sin  # (HW, hd) at every position
        kr = k * cos + rotate_pairwise(k[None])[0] * sin
        weights = torch.softmax(qr @ kr.T * attn.scaling, dim=-1)  # (HW query, HW key)
        assert torch.equal(weights.argmax(dim=1), torch.arange(weights.shape[0]))  # each position reads its own
        assert float(weights.diagonal().min()) > 0.1  # and sharply: > 25x a uniform weight at 16 x 16
