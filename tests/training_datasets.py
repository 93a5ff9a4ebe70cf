"""Small synthetic datasets on disk in the public layouts the training adapters read (tests only).

Each image is a smooth background with bright discs; the masks mark the discs, so a model can
learn them and the expected instances/boxes are known.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MRICRON = Path("/usr/share/mricron/templates")


def disc_image(seed: int, size: tuple[int, int] = (72, 88), discs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB image and an int32 label map: disc k has label 1 + (k % 2)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    img = 40 + 60 * xx / w + rng.normal(0, 3, (h, w))
    labels = np.zeros((h, w), np.int32)
    for k in range(discs):
        r = rng.uniform(6, 12)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        d = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[d] = 200 - 60 * (k % 2) + rng.normal(0, 3, int(d.sum()))
        labels[d] = 1 + (k % 2)
    rgb = np.clip(np.stack([img, img * 0.9, img * 0.8], -1), 0, 255).astype(np.uint8)
    return rgb, labels


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_gray(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def folders_dataset(
    root: Path, n: int = 12, *, suffix: str = "", labels_yaml: str | None = "labels: {1: bright disc, 2: dim disc}\n"
) -> Path:
    """images/*.png + masks/*{suffix}.png (label maps), with an optional dataset.yaml."""
    for i in range(n):
        rgb, lab = disc_image(i)
        write_rgb(root / "images" / f"case{i:02d}.png", rgb)
        write_gray(root / "masks" / f"case{i:02d}{suffix}.png", lab.astype(np.uint8))
    if labels_yaml is not None:
        (root / "dataset.yaml").write_text(labels_yaml)
    return root


def kvasir_dataset(root: Path, n: int = 4) -> Path:
    for i in range(n):
        rgb, lab = disc_image(100 + i)
        write_rgb(root / "images" / f"cju{i:04d}.jpg", rgb)
        write_rgb(root / "masks" / f"cju{i:04d}.jpg", np.repeat(((lab > 0) * 255).astype(np.uint8)[..., None], 3, -1))
    return root


def busi_dataset(root: Path) -> Path:
    for cls, n in (("benign", 2), ("malignant", 1), ("normal", 1)):
        for i in range(n):
            rgb, lab = disc_image(200 + i + 10 * len(cls))
            write_gray(root / cls / f"{cls} ({i + 1}).png", rgb[..., 0])
            if cls == "normal":
                write_gray(root / cls / f"{cls} ({i + 1})_mask.png", np.zeros(lab.shape, np.uint8))
                continue
            write_gray(root / cls / f"{cls} ({i + 1})_mask.png", ((lab == 1) * 255).astype(np.uint8))
            if (lab == 2).any():
                write_gray(root / cls / f"{cls} ({i + 1})_mask_1.png", ((lab == 2) * 255).astype(np.uint8))
    return root


def isic_dataset(root: Path, n: int = 3) -> Path:
    for i in range(n):
        rgb, lab = disc_image(300 + i)
        write_rgb(root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg", rgb)
        write_gray(root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", ((lab > 0) * 255).astype(np.uint8))
    return root


def nifti_dataset(root: Path, cases: int = 3, depth: int = 6) -> Path:
    """nnU-Net layout: imagesTr/case_0000.nii.gz + labelsTr/case.nii.gz + dataset.json."""
    import json

    import nibabel as nib

    for c in range(cases):
        img = np.zeros((40, 48, depth), np.int16)
        lab = np.zeros((40, 48, depth), np.uint8)
        for z in range(depth):
            rgb, lm = disc_image(400 + 10 * c + z, size=(40, 48))
            img[:, :, z] = rgb[..., 0].astype(np.int16) * 4 - 300  # CT-like range
            lab[:, :, z] = lm if z % 3 else 0  # every third slice has no label
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "imagesTr" / f"case{c}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labelsTr" / f"case{c}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "liver tumour": 2}}))
    return root
