"""The demo model's recipe (training/recipes/demo_brain.py): corpus, concepts, split, augmentation, second source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from training_datasets import MRICRON

pytest.importorskip("scipy")
pytest.importorskip("yaml")

from medsam3_training.config import AugmentConfig, ConfigError
from medsam3_training.data.augment import augment

needs_mricron = pytest.mark.skipif(not MRICRON.is_dir(), reason="mricron-data is not installed (apt-get install mricron-data)")


@needs_mricron
def test_the_lateral_ventricles_are_derived_inside_the_brain_and_outside_every_aal_region() -> None:
    from medsam3_training.data.mricron import lateral_ventricles
    from medsam3_training.data.sources import load_volume

    t1, _ = load_volume(MRICRON / "ch2.nii.gz")
    brain = load_volume(MRICRON / "ch2bet.nii.gz")[0] > 0
    aal = load_volume(MRICRON / "aal.nii.gz")[0]
    vent = lateral_ventricles(t1, brain, aal)
    ml = vent.sum() / 1000.0  # 1 mm voxels
    assert 10 < ml < 20, ml  # adult lateral ventricles: ~7-10 ml each, minus the temporal horns
    assert not (vent & ~brain).any() and not (vent & (aal > 0)).any()
    assert t1[vent].max() < 50
    # both hemispheres (RAS: x index < 90 is right... either way, both sides of the midline)
    xs = np.nonzero(vent)[0]
    assert (xs < 85).sum() > 3000 and (xs > 95).sum() > 3000


@needs_mricron
def test_corpus_concepts_split_and_config(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from medsam3_training.data.dataset import prepare_data
    from medsam3_training.recipes.demo_brain import CONCEPTS, DATASET, concept_dictionary, train_config

    cfg = train_config(tmp_path)
    assert cfg.data.split_seed == 42 and cfg.data.val_fraction == 0.15
    data = prepare_data(cfg.data)
    src = data.sources[0]
    assert src.concepts == list(CONCEPTS) and src.name == DATASET
    side = data.split.datasets[DATASET]
    assert not side.train & side.val and len(side.val) == round(0.15 * (len(side.train) + len(side.val)))
    # blocks of 10 neighbouring slices of one axis; both image versions of a slice on the same side
    index = src.index()
    by_slice: dict[tuple[str, int], set[str]] = {}
    for ref, _ in index:
        img, axis, i = ref.key.split(":")
        assert ref.group == f"colin27:{axis}:{int(i) // 10:04d}"
        by_slice.setdefault((axis, int(i)), set()).add(img)
    assert all(v == {"ch2", "ch2bet"} for v in by_slice.values())
    assert {a for a, _ in by_slice} == {"axial", "coronal", "sagittal"}
    assert all(t.ref.group not in side.val for t in data.train)
    # every concept is trained on, and the dictionary says where each mask comes from
    trained = {src.concepts[t.concept] for t in data.train}
    assert trained == set(CONCEPTS)
    d = concept_dictionary()
    assert set(d) == set(CONCEPTS) and d["thalamus"]["aal_regions"] == ["Thalamus_L", "Thalamus_R"]
    assert len(d["cerebellum"]["aal_regions"]) == 26


def test_stronger_augmentation_keeps_images_and_masks_aligned() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((60, 80, 3), np.uint8)
    image[20:40, 30:50] = 200
    masks = (image[None, ..., 0] > 0).copy()
    cfg = AugmentConfig(scale=(0.9, 1.0), rotate_deg=0, zoom_out=0.3, aspect=0.2, blur=1.0, noise=0.05, bias_field=0.2)
    for seed in range(20):
        out, m = augment(image, masks, cfg, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape[:2] == m.shape[1:]
        assert out[m[0]].mean() > 120 > out[~m[0]].mean(), "the mask still covers the bright square"
    # the new options are off by default and draw nothing from the RNG then: old runs are unchanged
    base = AugmentConfig()
    a = augment(image, masks, base, np.random.default_rng(1))
    b = augment(image, masks, AugmentConfig(zoom_out=0, aspect=0, blur=0, noise=0, bias_field=0), np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ConfigError, match="blur"):
        AugmentConfig(blur=-1)
    del rng


ITK = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz")


@pytest.mark.skipif(not ITK.is_file(), reason="insighttoolkit5-examples is not installed (the report's second source)")
def test_second_source_slices_have_square_millimetre_pixels() -> None:
    from medsam3_training.recipes.demo_brain import ItkT1Source, otsu_brain

    src = ItkT1Source()
    refs = src.refs()
    axes = {r.key.split(":")[0] for r in refs}
    assert axes == {"axial", "coronal", "sagittal"}
    ann = src.load(next(r for r in refs if r.key.startswith("sagittal")))
    # sagittal: 128 voxels of 2 mm (superior-inferior) by 62 of 3 mm (anterior-posterior)
    assert ann.image.shape[:2] == (256, 186) and ann.image.dtype == np.uint8
    assert ann.masks[0].shape == ann.image.shape[:2]
    assert otsu_brain(ann.image[..., 0]).shape == ann.image.shape[:2]


@needs_mricron
def test_stream_settings_are_chosen_on_training_slabs_away_from_the_held_out_blocks(tmp_path: Path) -> None:
    """`demo_brain policies` compares stream policies on slabs the detector trained on, never next to a held-out block."""
    import json

    from medsam3_training.recipes.demo_brain import CONCEPTS, DATASET, SLICE_AXES, SPLIT_BLOCK, training_slabs, volume_options

    val = [f"{DATASET}:axial:0009", f"{DATASET}:axial:0010", f"{DATASET}:coronal:0003", f"{DATASET}:sagittal:0008"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "split.json").write_text(json.dumps({"datasets": {DATASET: {"val": val, "train": []}}}))
    slabs = training_slabs(tmp_path)
    assert [s.name.split()[0] for s in slabs] == list(SLICE_AXES)
    held = {(g.split(":")[1], int(g.split(":")[2])) for g in val}
    for slab in slabs:
        axis, span = slab.name.split()
        i0, i1 = (int(x) for x in span.split("-"))
        assert i1 - i0 + 1 == 2 * SPLIT_BLOCK == len(slab.image) and i0 % SPLIT_BLOCK == 0
        b = i0 // SPLIT_BLOCK
        assert not {(axis, k) for k in range(b - 1, b + 3)} & held  # its two blocks and both neighbours train
        assert set(slab.truths) == set(CONCEPTS) and all(t.shape == slab.image.shape for t in slab.truths.values())
    # tracking starts one object from the top detection and keeps it (no hot-start removal)
    detect, track = volume_options()
    assert detect.detection_threshold == 0.0 and detect.max_objects is None
    assert track.policy == "transformers" and track.max_objects == 1 and track.new_object_threshold == 0.0
