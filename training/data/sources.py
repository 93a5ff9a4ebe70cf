"""Dataset folders on disk -> 2D samples with per-concept masks.

A *source* is one dataset folder. It lists its samples (`SampleRef`: a 2D image, or one
slice of a volume), says which concepts each contains (`index`), and loads a sample as an
8-bit RGB image plus one boolean mask per concept present (`load`). Layouts:

folders     images/ + masks/ with matching file names (`case1.png` <-> `case1.png`,
            `case1_mask.png`, `case1_segmentation.png`, ...), 2D files or NIfTI volumes;
            masks are label maps (pixel value = label id of the dictionary) or, for a
            single concept, any non-zero pixel
kvasir-seg  Kvasir-SEG: images/*.jpg + masks/*.jpg (JPEG masks, > 127), concept "polyp"
busi        BUSI (Dataset_BUSI_with_GT): benign/, malignant/, normal/ with `x.png` +
            `x_mask.png` (+ `x_mask_1.png`, one file per lesion = one instance);
            concept "breast tumor"; normal images are negatives
isic2018    ISIC 2018 task 1: *Input*/ISIC_*.jpg + *GroundTruth*/ISIC_*_segmentation.png,
            concept "skin lesion"
nifti       imagesTr/ + labelsTr/ (nnU-Net / Medical Segmentation Decathlon; labels from
            dataset.json), volumes sliced along the configured axes
mricron     Debian's mricron-data MRI templates (see `mricron.py`)

Volumes are reoriented to RAS; axial slices are shown with anterior up, and mapped to 8 bits
by the dataset's window or the volume's 0.5..99.5 percentiles (the same mapping for every
slice of a volume). Images reach the model as 8-bit RGB (grayscale repeated), exactly what
`medsam3_rt` feeds the exported model for an 8-bit image.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam3_rt.errors import InputError
from medsam3_rt.io.images import IMAGE_SUFFIXES, list_images, read_image
from medsam3_rt.preprocess import IntensityWindow, to_rgb

from ..config import ConfigError, DatasetSpec, build, read_yaml
from .labels import LabelDictionary, label_dictionary

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz")
MASK_SUFFIXES = ("", "_mask", "_segmentation", "_seg", "_label", "_labels", "_gt")
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # RAS voxel axes


@dataclass(frozen=True, order=True)
class SampleRef:
    """One 2D sample. `group` is the unit of the train/validation split."""

    dataset: str
    key: str
    group: str


@dataclass
class Annotation:
    """image: uint8 (H, W, 3) RGB; masks: concept index -> bool (H, W), non-empty masks only;
    instance_ids: int32 (H, W) instance labels when the source has them (else None)."""

    image: np.ndarray
    masks: dict[int, np.ndarray]
    instance_ids: np.ndarray | None = None


def to_uint8_rgb(image: np.ndarray, window: IntensityWindow | None = None) -> np.ndarray:
    """The runtime's intensity rule (`medsam3_rt.preprocess.to_rgb`), rounded to 8 bits."""
    rgb, is_uint8 = to_rgb(image, window)
    return rgb if is_uint8 else np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def volume_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in (".nii.gz", ".nii") if name.endswith(s)), None)


def strip_suffix(path: Path) -> str:
    s = volume_suffix(path)
    return path.name[: -len(s)] if s else path.stem


class Source(abc.ABC):
    """Base class: a dataset folder with a label-to-text dictionary."""

    default_instances = "components"

    def __init__(self, spec: DatasetSpec, labels: LabelDictionary) -> None:
        self.spec = spec
        self.root = Path(spec.path)
        self.name = spec.name or self.root.name
        self.labels = labels
        self.concepts = labels.concepts
        self.instances = spec.instances or self.default_instances
        if self.instances == "labels" and len(self.concepts) != 1:
            raise ConfigError(f"dataset {self.name}: instances: labels needs a single concept (mask values are instance ids)")

    @property
    def exclusive(self) -> bool:
        """True when concepts never overlap (one label map), so multi-class evaluation applies."""
        return True

    @abc.abstractmethod
    def refs(self) -> list[SampleRef]:
        """Every sample of the dataset (layouts implement this)."""

    @abc.abstractmethod
    def load(self, ref: SampleRef) -> Annotation:
        """One sample's image and masks (layouts implement this)."""

    def index(self) -> list[tuple[SampleRef, frozenset[int]]]:
        """Every sample with the concepts it contains (reads every mask once)."""
        return [(ref, frozenset(self.load(ref).masks)) for ref in self.refs()]

    def concept_masks(self, labelmap: np.ndarray, where: str) -> dict[int, np.ndarray]:
        """Per-concept masks of a label map, checking every value against the dictionary."""
        if self.labels.binary:
            m = labelmap != 0
            return {0: m} if m.any() else {}
        values = np.unique(labelmap)
        unknown = [int(v) for v in values if v != 0 and int(v) not in self.labels.labels]
        if unknown:
            known = ", ".join(str(k) for k in sorted(self.labels.labels))
            raise InputError(
                f"{where}: label {unknown[0]} is not in the label-to-text dictionary of dataset {self.name} (labels: {known}); "
                "add it to `labels` or fix the mask"
            )
        out: dict[int, np.ndarray] = {}
        for ci, concept in enumerate(self.concepts):
            ids = self.labels.label_ids(concept)
            m = np.isin(labelmap, ids)
            if m.any():
                out[ci] = m
        return out


# ---- 2D files -------------------------------------------------------------------------------


def read_mask(path: Path, *, lossy_threshold: bool) -> np.ndarray:
    """A label map (H, W) from a mask file; JPEG masks are thresholded at 127 (compression noise)."""
    m = read_image(path)
    if m.ndim == 3:
        m = m.max(axis=2)
    if lossy_threshold or path.suffix.lower() in (".jpg", ".jpeg"):
        return (m > 127).astype(np.int32)
    return m.astype(np.int32)


def find_mask(masks_dir: Path, stem: str, by_stem: dict[str, Path]) -> Path | None:
    for suffix in MASK_SUFFIXES:
        if f"{stem}{suffix}" in by_stem:
            return by_stem[f"{stem}{suffix}"]
    return None


class FolderSource(Source):
    """images/ + masks/ of 2D files (NIfTI pairs are delegated to `VolumeSource`)."""

    lossy_threshold = False

    def __init__(self, spec: DatasetSpec, labels: LabelDictionary) -> None:
        super().__init__(spec, labels)
        self.images_dir = self.root / (spec.images or "images")
        self.masks_dir = self.root / (spec.masks or "masks")
        for d, what in ((self.images_dir, "images"), (self.masks_dir, "masks")):
            if not d.is_dir():
                raise InputError(f"dataset {self.name}: {what} folder '{d}' does not exist (layout '{spec.layout}', see docs/training.md)")
        images = list_images(self.images_dir)
        if not images:
            raise InputError(f"dataset {self.name}: '{self.images_dir}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        by_stem = {p.stem: p for p in list_images(self.masks_dir)}
        self.pairs: dict[str, tuple[Path, Path]] = {}
        missing = []
        for img in images:
            mask = find_mask(self.masks_dir, img.stem, by_stem)
            if mask is None:
                missing.append(img.name)
            else:
                self.pairs[img.stem] = (img, mask)
        if missing:
            raise InputError(
                f"dataset {self.name}: {len(missing)} image(s) have no mask in '{self.masks_dir}' (e.g. {missing[0]}); "
                f"masks are matched by file name, optionally with {', '.join(s for s in MASK_SUFFIXES if s)}"
            )

    def refs(self) -> list[SampleRef]:
        return [SampleRef(self.name, stem, stem) for stem in sorted(self.pairs)]

    def _masks(self, labelmap: np.ndarray, where: str) -> dict[int, np.ndarray]:
        if self.instances == "labels":
            return {0: labelmap != 0} if (labelmap != 0).any() else {}
        return self.concept_masks(labelmap, where)

    def index(self) -> list[tuple[SampleRef, frozenset[int]]]:
        """Reads the masks only (images are decoded when a sample is loaded)."""
        out = []
        for ref in self.refs():
            mask_path = self.pairs[ref.key][1]
            out.append((ref, frozenset(self._masks(read_mask(mask_path, lossy_threshold=self.lossy_threshold), str(mask_path)))))
        return out

    def load(self, ref: SampleRef) -> Annotation:
        img_path, mask_path = self.pairs[ref.key]
        image = to_uint8_rgb(read_image(img_path))
        labelmap = read_mask(mask_path, lossy_threshold=self.lossy_threshold)
        if labelmap.shape != image.shape[:2]:
            raise InputError(
                f"{mask_path}: mask is {labelmap.shape[1]}x{labelmap.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}"
            )
        masks = self._masks(labelmap, str(mask_path))
        return Annotation(image, masks, labelmap if self.instances == "labels" else None)


class KvasirSource(FolderSource):
    lossy_threshold = True


class IsicSource(FolderSource):
    default_instances = "semantic"  # one lesion per image, sometimes in several pieces

    def __init__(self, spec: DatasetSpec, labels: LabelDictionary) -> None:
        root = Path(spec.path)
        images = spec.images or _first_dir(root, r"Input")
        masks = spec.masks or _first_dir(root, r"GroundTruth")
        super().__init__(dataclasses.replace(spec, images=images, masks=masks), labels)


def _first_dir(root: Path, pattern: str) -> str:
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and re.search(pattern, d.name, re.IGNORECASE)) if root.is_dir() else []
    if not found:
        raise InputError(f"dataset '{root}': no sub-folder matching '*{pattern}*' (ISIC 2018 layout: *Input*/ and *GroundTruth*/)")
    return found[0]


class BusiSource(Source):
    """BUSI: one instance per mask file; `normal` images have no lesion."""

    default_instances = "labels"
    CLASSES = ("benign", "malignant", "normal")

    def __init__(self, spec: DatasetSpec, labels: LabelDictionary) -> None:
        super().__init__(spec, labels)
        self.items: dict[str, tuple[Path, list[Path]]] = {}
        for cls in self.CLASSES:
            folder = self.root / cls
            if not folder.is_dir():
                continue
            files = list_images(folder)
            for img in (f for f in files if "_mask" not in f.stem):
                masks = sorted(
                    (f for f in files if f.stem == f"{img.stem}_mask" or f.stem.startswith(f"{img.stem}_mask_")),
                    key=lambda f: f.stem,
                )
                self.items[f"{cls}/{img.stem}"] = (img, masks)
        if not self.items:
            raise InputError(f"dataset {self.name}: '{self.root}' has no benign/, malignant/ or normal/ folder with images (BUSI layout)")

    def refs(self) -> list[SampleRef]:
        return [SampleRef(self.name, key, key) for key in sorted(self.items)]

    def index(self) -> list[tuple[SampleRef, frozenset[int]]]:
        """Reads the masks only (images are decoded when a sample is loaded)."""
        out = []
        for ref in self.refs():
            present = any((read_mask(mp, lossy_threshold=True) != 0).any() for mp in self.items[ref.key][1])
            out.append((ref, frozenset({0}) if present else frozenset()))
        return out

    def load(self, ref: SampleRef) -> Annotation:
        img_path, mask_paths = self.items[ref.key]
        image = to_uint8_rgb(read_image(img_path))
        ids = np.zeros(image.shape[:2], np.int32)
        for k, mp in enumerate(mask_paths, start=1):
            m = read_mask(mp, lossy_threshold=True)
            if m.shape != ids.shape:
                raise InputError(f"{mp}: mask is {m.shape[1]}x{m.shape[0]} but its image is {ids.shape[1]}x{ids.shape[0]}")
            ids[m != 0] = k
        masks = {0: ids != 0} if (ids != 0).any() else {}
        return Annotation(image, masks, ids)


# ---- volumes --------------------------------------------------------------------------------


def load_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume in RAS voxel order (first channel of a 4-D file) and its voxel spacing."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {e})") from None
    if data.ndim == 4:
        log.warning("%s is 4-D; using its first channel", path.name)
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {list(data.shape)}")
    return np.ascontiguousarray(data), tuple(float(z) for z in img.header.get_zooms()[:3])


def take_slice(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """A 2D slice shown the radiological way up (superior/anterior at the top)."""
    sel: list[int | slice] = [slice(None)] * 3
    sel[AXES[axis]] = index
    return np.ascontiguousarray(np.rot90(volume[tuple(sel)]))


def volume_to_uint8(volume: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    v = volume.astype(np.float32)
    if window is not None:
        lo, hi = window
    else:
        nz = v[np.isfinite(v)]
        lo, hi = (float(np.percentile(nz, 0.5)), float(np.percentile(nz, 99.5))) if nz.size else (0.0, 1.0)
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.clip(np.rint((np.clip(v, lo, hi) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def slice_group(volume_key: str, axis: str, index: int, block: int) -> str:
    return volume_key if block == 0 else f"{volume_key}:{axis}:{index // block:04d}"


class VolumeSource(Source):
    """NIfTI image/label volume pairs, sliced to 2D along the configured axes."""

    def __init__(self, spec: DatasetSpec, labels: LabelDictionary, images_dir: Path, labels_dir: Path) -> None:
        super().__init__(spec, labels)
        for d, what in ((images_dir, "images"), (labels_dir, "labels")):
            if not d.is_dir():
                raise InputError(f"dataset {self.name}: {what} folder '{d}' does not exist (layout 'nifti': imagesTr/ + labelsTr/)")
        label_files = {strip_suffix(p): p for p in labels_dir.iterdir() if volume_suffix(p) and not p.name.startswith(".")}
        self.volumes: dict[str, tuple[Path, Path]] = {}
        missing = []
        for img in sorted(p for p in images_dir.iterdir() if volume_suffix(p) and not p.name.startswith(".")):
            stem = strip_suffix(img)
            case = re.sub(r"_\d{4}$", "", stem)  # nnU-Net channel suffix: case_0000 -> case
            lab = label_files.get(stem) or label_files.get(case)
            if lab is None:
                missing.append(img.name)
            else:
                self.volumes[case] = (img, lab)
        if missing:
            raise InputError(f"dataset {self.name}: no label volume for {len(missing)} image(s) in '{labels_dir}' (e.g. {missing[0]})")
        if not self.volumes:
            raise InputError(f"dataset {self.name}: '{images_dir}' has no NIfTI volumes (.nii, .nii.gz)")

    @functools.lru_cache(maxsize=2)  # noqa: B019 - a source lives as long as its run
    def _pair(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        img_path, lab_path = self.volumes[case]
        image, _ = load_volume(img_path)
        labels, _ = load_volume(lab_path)
        if image.shape != labels.shape:
            raise InputError(f"{lab_path}: label volume {list(labels.shape)} does not match its image {list(image.shape)}")
        return volume_to_uint8(image, self.spec.window), np.rint(labels).astype(np.int32)

    def refs(self) -> list[SampleRef]:
        return [r for r, _ in self.index()]

    @functools.cache  # noqa: B019
    def index(self) -> list[tuple[SampleRef, frozenset[int]]]:
        out = []
        for case in sorted(self.volumes):
            _, labels = self._pair(case)
            for axis in self.spec.axes:
                for i in range(0, labels.shape[AXES[axis]], self.spec.slice_stride):
                    lm = take_slice(labels, axis, i)
                    present = frozenset(self.concept_masks(lm, f"{self.volumes[case][1]} {axis} slice {i}"))
                    ref = SampleRef(self.name, f"{case}:{axis}:{i:04d}", slice_group(case, axis, i, self.spec.split_block))
                    out.append((ref, present))
        return out

    def load(self, ref: SampleRef) -> Annotation:
        case, axis, idx = ref.key.rsplit(":", 2)
        image, labels = self._pair(case)
        i = int(idx)
        lm = take_slice(labels, axis, i)
        return Annotation(to_uint8_rgb(take_slice(image, axis, i)), self.concept_masks(lm, f"{case} {axis} slice {i}"))


# ---- opening a dataset folder ---------------------------------------------------------------

LAYOUT_DEFAULT_CONCEPT = {"kvasir-seg": "polyp", "busi": "breast tumor", "isic2018": "skin lesion"}


def detect_layout(root: Path) -> str:
    names = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if {"ch2.nii.gz", "aal.nii.gz"} <= names or {"ch2bet.nii.gz", "aal.nii.gz"} <= names:
        return "mricron"
    if {"imagesTr", "labelsTr"} <= names:
        return "nifti"
    if names & {"benign", "malignant"}:
        return "busi"
    if any(re.search("GroundTruth", n, re.IGNORECASE) for n in names) and any(re.search("Input", n, re.IGNORECASE) for n in names):
        return "isic2018"
    if {"images", "masks"} <= names:
        return "kvasir-seg" if "kvasir" in root.name.lower() else "folders"
    raise InputError(
        f"dataset '{root}': cannot tell its layout (expected images/ + masks/, imagesTr/ + labelsTr/, BUSI, ISIC 2018 or "
        "mricron-data files); set `layout:` in the training config or a dataset.yaml"
    )


def resolve_spec(spec: DatasetSpec) -> DatasetSpec:
    """Merge the folder's dataset.yaml under the run's settings and fill in `layout: auto`."""
    root = Path(spec.path)
    if not root.exists():
        raise InputError(f"dataset folder '{root}' does not exist")
    if not root.is_dir():
        raise InputError(f"dataset '{root}' is not a folder")
    meta = root / "dataset.yaml"
    if meta.is_file():
        data = read_yaml(meta) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{meta}: must be a mapping of dataset settings")
        data = {k: v for k, v in data.items() if k != "path"}
        base = build(DatasetSpec, {"path": str(root), **data}, where=str(meta), base_dir=root)
        defaults = DatasetSpec(path=spec.path)
        explicit = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if getattr(spec, f.name) != getattr(defaults, f.name)}
        spec = dataclasses.replace(base, **explicit)
    if spec.layout == "auto":
        spec = dataclasses.replace(spec, layout=detect_layout(root))
    return spec


def open_source(spec: DatasetSpec) -> Source:
    """The source for one dataset entry of a config."""
    spec = resolve_spec(spec)
    root = Path(spec.path)
    where = f"dataset {spec.name or root.name}"
    if spec.layout == "mricron":
        from .mricron import MricronSource

        return MricronSource(spec)
    if spec.layout == "nifti":
        labels_src = spec.labels
        if labels_src is None and spec.concept is None and (root / "dataset.json").is_file():
            labels_src = str(root / "dataset.json")
        labels = label_dictionary(labels_src, spec.concept, where)
        return VolumeSource(spec, labels, root / (spec.images or "imagesTr"), root / (spec.masks or "labelsTr"))
    labels = label_dictionary(spec.labels, spec.concept, where, LAYOUT_DEFAULT_CONCEPT.get(spec.layout))
    if spec.layout == "busi":
        return BusiSource(spec, labels)
    if spec.layout == "isic2018":
        return IsicSource(spec, labels)
    if spec.layout == "kvasir-seg":
        return KvasirSource(spec, labels)
    # `folders`: 2D files, or NIfTI volumes in the same images/ + masks/ arrangement
    images_dir = root / (spec.images or "images")
    if images_dir.is_dir() and any(volume_suffix(p) for p in images_dir.iterdir()):
        return VolumeSource(spec, labels, images_dir, root / (spec.masks or "masks"))
    return FolderSource(spec, labels)
