"""Dataset adapters, label dictionaries, the saved 85/15 split (seed 42) and training triplets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from medsam3_training.config import ConfigError, DataConfig, DatasetSpec
from medsam3_training.data.labels import label_dictionary
from medsam3_training.data.sources import open_source
from medsam3_training.data.split import draw_split, make_split, read_split
from training_datasets import MRICRON, busi_dataset, folders_dataset, isic_dataset, kvasir_dataset, nifti_dataset, write_gray

from medsam3_rt.errors import InputError

needs_mricron = pytest.mark.skipif(not MRICRON.is_dir(), reason="mricron-data is not installed (apt-get install mricron-data)")


# ---- split ----------------------------------------------------------------------------------


def test_split_is_deterministic_by_group_and_85_15() -> None:
    groups = [f"g{i:03d}" for i in range(200) for _ in range(3)]  # 3 samples per group
    a, b = draw_split(groups, 0.15, 42), draw_split(list(reversed(groups)), 0.15, 42)
    assert a == b, "the same groups give the same split, whatever their order"
    assert len(a.val) == 30 and len(a.train) == 170 and not (a.val & a.train)
    assert draw_split(groups, 0.15, 7) != a
    # the exact draw is pinned: seed 42 must keep selecting the same validation groups
    rng_val = sorted(sorted(set(groups))[i] for i in np.random.default_rng(42).permutation(200)[:30])
    assert sorted(a.val) == rng_val
    assert draw_split(["only"], 0.15, 42).val == frozenset(), "a single group cannot be split"
    assert len(draw_split(["a", "b"], 0.15, 42).val) == 1


def test_saved_split_is_reused_and_checked(tmp_path: Path) -> None:
    groups = {"ds": [f"g{i}" for i in range(20)]}
    split = make_split(groups, 0.15, 42)
    split.save(tmp_path / "split.json", groups)
    again = make_split(groups, 0.5, 1, tmp_path / "split.json")
    assert again.datasets == split.datasets and again.seed == 42
    assert read_split(tmp_path / "split.json")["datasets"]["ds"]["val"] == sorted(split.datasets["ds"].val)
    with pytest.raises(ConfigError, match="changed since the split was drawn"):
        make_split({"ds": groups["ds"] + ["new"]}, 0.15, 42, tmp_path / "split.json")
    with pytest.raises(ConfigError, match="no split for dataset 'other'"):
        make_split({"other": ["a", "b"]}, 0.15, 42, tmp_path / "split.json")


# ---- label dictionaries -----------------------------------------------------------------------


def test_label_dictionary_formats(tmp_path: Path) -> None:
    assert label_dictionary({1: "liver", 2: " liver  tumour "}, None, "d").labels == {1: "liver", 2: "liver tumour"}
    assert label_dictionary(None, "polyp", "d").binary
    (tmp_path / "nnunet.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    assert label_dictionary(str(tmp_path / "nnunet.json"), None, "d").labels == {1: "liver", 2: "tumour"}
    (tmp_path / "msd.json").write_text(json.dumps({"labels": {"0": "background", "1": "pancreas"}}))
    assert label_dictionary(str(tmp_path / "msd.json"), None, "d").labels == {1: "pancreas"}
    (tmp_path / "labels.yaml").write_text("1: benign lesion\n2: benign lesion\n3: cyst\n")
    d = label_dictionary(str(tmp_path / "labels.yaml"), None, "d")
    assert d.concepts == ["benign lesion", "cyst"] and d.label_ids("benign lesion") == [1, 2]
    for bad, msg in (({0: "x"}, "label 0 is background"), ({"one": "x"}, "must be integers"), ({1: ""}, "non-empty")):
        with pytest.raises(ConfigError, match=msg):
            label_dictionary(bad, None, "d")
    with pytest.raises(ConfigError, match="no label-to-text dictionary"):
        label_dictionary(None, None, "d")


# ---- adapters -------------------------------------------------------------------------------


def test_folder_layout_with_dataset_yaml(tmp_path: Path) -> None:
    root = folders_dataset(tmp_path / "discs", n=4, suffix="_mask")
    src = open_source(DatasetSpec(path=str(root)))
    assert src.spec.layout == "folders" and src.concepts == ["bright disc", "dim disc"] and src.exclusive
    refs = src.refs()
    assert [r.key for r in refs] == ["case00", "case01", "case02", "case03"] and all(r.group == r.key for r in refs)
    ann = src.load(refs[0])
    assert ann.image.dtype == np.uint8 and ann.image.shape == (72, 88, 3)
    assert set(ann.masks) <= {0, 1} and all(m.dtype == bool for m in ann.masks.values())
    # the run's settings win over dataset.yaml
    assert open_source(DatasetSpec(path=str(root), labels={1: "disc", 2: "disc"})).concepts == ["disc"]


def test_unknown_label_and_missing_folders_are_one_line_errors(tmp_path: Path) -> None:
    root = folders_dataset(tmp_path / "d", n=2)
    write_gray(root / "masks" / "case01.png", np.full((72, 88), 7, np.uint8))
    src = open_source(DatasetSpec(path=str(root)))
    with pytest.raises(InputError, match="label 7 is not in the label-to-text dictionary") as e:
        src.index()
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="does not exist"):
        open_source(DatasetSpec(path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot tell its layout"):
        open_source(DatasetSpec(path=str(tmp_path / "empty")))
    (root / "masks" / "case00.png").unlink()
    with pytest.raises(InputError, match="have no mask"):
        open_source(DatasetSpec(path=str(root)))


def test_public_layouts_are_recognised(tmp_path: Path) -> None:
    kv = open_source(DatasetSpec(path=str(kvasir_dataset(tmp_path / "Kvasir-SEG"))))
    assert kv.spec.layout == "kvasir-seg" and kv.concepts == ["polyp"] and kv.instances == "components"
    ann = kv.load(kv.refs()[0])
    assert ann.masks[0].sum() > 100  # JPEG mask thresholded at 127, both discs

    busi = open_source(DatasetSpec(path=str(busi_dataset(tmp_path / "Dataset_BUSI_with_GT"))))
    assert busi.spec.layout == "busi" and busi.concepts == ["breast tumor"] and busi.instances == "labels"
    index = dict((r.key, p) for r, p in busi.index())
    assert index["normal/normal (1)"] == frozenset(), "normal images are negatives"
    ann = busi.load(next(r for r in busi.refs() if r.key == "benign/benign (1)"))
    assert set(np.unique(ann.instance_ids)) == {0, 1, 2}, "one instance per mask file"

    isic = open_source(DatasetSpec(path=str(isic_dataset(tmp_path / "isic"))))
    assert isic.spec.layout == "isic2018" and isic.concepts == ["skin lesion"] and isic.instances == "semantic"
    assert len(isic.refs()) == 3


def test_nifti_volumes_are_sliced(tmp_path: Path) -> None:
    root = nifti_dataset(tmp_path / "Task03_Liver")
    src = open_source(DatasetSpec(path=str(root), axes=("axial",)))
    assert src.spec.layout == "nifti" and src.concepts == ["liver", "liver tumour"]
    index = src.index()
    assert len(index) == 3 * 6 and {r.group for r, _ in index} == {"case0", "case1", "case2"}
    assert [bool(p) for _, p in index[:6]] == [False, True, True, False, True, True]
    ann = src.load(index[1][0])
    assert ann.image.dtype == np.uint8 and ann.image.shape == (48, 40, 3), "RAS slices shown rotated, anterior up"
    blocks = open_source(DatasetSpec(path=str(root), axes=("axial", "coronal"), split_block=2))
    assert "case0:axial:0001" in {r.group for r, _ in blocks.index()}


@needs_mricron
def test_mricron_adapter() -> None:
    from medsam3_training.data.mricron import AAL_GROUPS, aal_groups, read_aal_names

    names = read_aal_names(MRICRON / "aal.nii.txt")
    groups = aal_groups(names)
    assert set(groups) == set(AAL_GROUPS)
    assert all(names[i].startswith(("Cerebelum_", "Vermis_")) for i in groups["cerebellum"]) and len(groups["cerebellum"]) == 26
    assert [names[i] for i in groups["thalamus"]] == ["Thalamus_L", "Thalamus_R"]
    assert not set(groups["frontal lobe"]) & set(groups["temporal lobe"])

    src = open_source(DatasetSpec(path=str(MRICRON), concepts=("brain", "cerebellum"), axes=("axial",), slice_stride=5))
    assert src.spec.layout == "mricron" and src.name == "mricron" and not src.exclusive
    index = src.index()
    keys = [r.key for r, _ in index]
    assert all(k.startswith("ch2:axial:") for k in keys)
    assert all(r.group == f"colin27:axial:{int(r.key.split(':')[2]) // 10:04d}" for r, _ in index), "blocks of 10 slices"
    assert any(1 in p for _, p in index) and any(1 not in p for _, p in index), "cerebellum is in some slices only"
    import nibabel as nib

    bet = np.asanyarray(nib.load(str(MRICRON / "ch2bet.nii.gz")).dataobj) > 0
    ref = index[len(index) // 2][0]
    z = int(ref.key.split(":")[2])
    ann = src.load(ref)
    np.testing.assert_array_equal(ann.masks[0], np.rot90(bet[:, :, z]))
    assert ann.image.shape == (217, 181, 3) and ann.image.dtype == np.uint8
    assert open_source(DatasetSpec(path=str(MRICRON), concepts=("thalamus", "cerebellum"))).exclusive
    with pytest.raises(ConfigError, match="unknown mricron concept"):
        open_source(DatasetSpec(path=str(MRICRON), concepts=("ventricle",)))


# ---- triplets ---------------------------------------------------------------------------------


def test_triplets_positives_negatives_and_determinism(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from medsam3_training.data.dataset import TripletDataset, collate, prepare_data

    root = folders_dataset(tmp_path / "discs", n=20)
    cfg = DataConfig(datasets=(DatasetSpec(path=str(root)),), negatives=0.25)
    a = prepare_data(cfg)
    b = prepare_data(cfg)
    assert a.train == b.train and a.val == b.val
    st = a.stats["discs"]
    assert st["train_samples"] + st["val_samples"] == 20 and st["val_samples"] == 3
    assert st["negative_triplets"] == min(round(0.25 * st["positive_triplets"]), st["negative_triplets"])
    assert {t.ref.group for t in a.train}.isdisjoint({r.group for r in a.val["discs"]})
    tokens = {c: (np.arange(32), np.ones(32, np.int64)) for c in a.sources[0].concepts}
    ds = TripletDataset(a.sources, a.train, tokens, image_size=56, mask_size=16, num_queries=5, augment_cfg=cfg.augment, seed=0)
    x1, x2 = ds[3], ds[3]
    np.testing.assert_array_equal(x1[0], x2[0])
    ds.set_epoch(1)
    assert not np.array_equal(ds[3][0], x1[0]), "augmentation differs per epoch"
    batch = collate([ds[i] for i in range(4)], num_queries=5)
    assert batch.pixel_values.shape == (4, 3, 56, 56) and batch.input_ids.shape == (4, 32)
    assert batch.targets.boxes_xyxy.shape == (4, 5, 4) and batch.targets.semantic.shape == (4, 16, 16)


def test_several_datasets_mix_in_one_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from medsam3_training.data.dataset import prepare_data

    discs = folders_dataset(tmp_path / "discs", n=8)
    kv = kvasir_dataset(tmp_path / "Kvasir-SEG", n=6)
    bundle = prepare_data(DataConfig(datasets=(DatasetSpec(path=str(discs)), DatasetSpec(path=str(kv), repeat=2))))
    assert [s.name for s in bundle.sources] == ["discs", "Kvasir-SEG"]
    by_source = [sum(1 for t in bundle.train if t.source == i) for i in range(2)]
    assert all(by_source) and set(bundle.val) == {"discs", "Kvasir-SEG"}
    kv_pairs = [(t.ref, t.concept) for t in bundle.train if t.source == 1]
    assert len(kv_pairs) == 2 * len(set(kv_pairs)), "repeat: 2 oversamples a small dataset"
    with pytest.raises(ConfigError, match="two datasets are named 'discs'"):
        prepare_data(DataConfig(datasets=(DatasetSpec(path=str(discs)), DatasetSpec(path=str(discs)))))
