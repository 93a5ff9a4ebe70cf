"""Debian's `mricron-data` as a labelled 2D corpus: a real T1 MRI with atlas concepts.

`apt-get install mricron-data` puts, on one 1 mm MNI grid (181 x 217 x 181):

* `ch2.nii.gz`     Colin27, a T1-weighted MRI of one subject averaged over 27 scans (skull on)
* `ch2bet.nii.gz`  the same, skull-stripped: its non-zero voxels are the brain mask
* `aal.nii.gz`     the AAL atlas (116 regions) with its names in `aal.nii.txt`

Debian's copyright file licenses the package BSD-3-clause (Chris Rorden); the templates come
from their upstream projects (Colin27: Holmes et al. 1998; AAL: Tzourio-Mazoyer et al. 2002),
whose own terms apply to anything derived and shipped.

Concepts (the label-to-text dictionary) are built from the atlas names. "brain" is the
skull-stripped mask; the others group AAL regions (hemispheres merged) into clinical terms:

    cerebellum       Cerebelum_*, Vermis_*
    frontal lobe     Precentral, Frontal_*, Rolandic_Oper, Supp_Motor_Area, Olfactory, Rectus,
                     Paracentral_Lobule
    parietal lobe    Postcentral, Parietal_*, SupraMarginal, Angular, Precuneus
    temporal lobe    Heschl, Temporal_*, Fusiform
    occipital lobe   Calcarine, Cuneus, Lingual, Occipital_*
    insula           Insula
    cingulate gyrus  Cingulum_*
    hippocampus      Hippocampus
    amygdala         Amygdala
    thalamus         Thalamus
    basal ganglia    Caudate, Putamen, Pallidum

(ParaHippocampal belongs to none.) AAL has no ventricles; "lateral ventricle" is an opt-in
concept (not in the default list) derived from the T1 intensities and the atlases together,
see `lateral_ventricles`. The groups are disjoint, and the ventricles lie outside every AAL
region, so without "brain" the concepts form one label map and multi-class evaluation applies;
"brain" overlaps all of them.

Samples are slices along the configured axes, from the configured image sources (`ch2`, the
skull-on scan, and/or `ch2bet`), keeping slices whose brain covers at least 1 % of the slice.
It is one subject, so the split cannot be by patient: slices are grouped in blocks of
`split_block` neighbours (10 when unset) and whole blocks go to one side. Slices of different
axes still share voxels; a model validated here has seen the same subject.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from medsam3_rt.errors import InputError

from ..config import ConfigError, DatasetSpec
from .labels import LabelDictionary
from .sources import AXES, Annotation, SampleRef, Source, load_volume, slice_group, take_slice, to_uint8_rgb, volume_to_uint8

DEFAULT_DIR = Path("/usr/share/mricron/templates")
IMAGE_SOURCES = ("ch2", "ch2bet")
DEFAULT_BLOCK = 10
MIN_BRAIN_FRACTION = 0.01

AAL_GROUPS: dict[str, tuple[str, ...]] = {
    "cerebellum": (r"Cerebelum_", r"Vermis_"),
    "frontal lobe": (r"Precentral", r"Frontal_", r"Rolandic_Oper", r"Supp_Motor_Area", r"Olfactory", r"Rectus", r"Paracentral_Lobule"),
    "parietal lobe": (r"Postcentral", r"Parietal_", r"SupraMarginal", r"Angular", r"Precuneus"),
    "temporal lobe": (r"Heschl", r"Temporal_", r"Fusiform"),
    "occipital lobe": (r"Calcarine", r"Cuneus", r"Lingual", r"Occipital_"),
    "insula": (r"Insula",),
    "cingulate gyrus": (r"Cingulum_",),
    "hippocampus": (r"Hippocampus",),
    "amygdala": (r"Amygdala",),
    "thalamus": (r"Thalamus",),
    "basal ganglia": (r"Caudate", r"Putamen", r"Pallidum"),
}
CONCEPTS = ("brain", *AAL_GROUPS)
DERIVED_CONCEPTS = ("lateral ventricle",)  # opt-in: `concepts: [..., lateral ventricle]`
VENTRICLE_T1_MAX = 50  # ch2 intensity (0..254) below which a voxel inside the brain counts as CSF
VENTRICLE_DEPTH_MM = 8.0  # deeper than this inside the brain mask (excludes sulcal CSF at the surface)
VENTRICLE_MIN_VOXELS = 2000


def lateral_ventricles(t1: np.ndarray, brain: np.ndarray, aal: np.ndarray) -> np.ndarray:
    """The lateral ventricles of Colin27, derived from the T1 and the atlases (1 mm grid).

    CSF candidates are voxels darker than `VENTRICLE_T1_MAX` in the T1, more than
    `VENTRICLE_DEPTH_MM` inside the skull-stripped brain mask and outside every AAL region
    (AAL labels grey matter only). Their largest (6-connected) component is the ventricular
    system's body; a morphological opening (6-connected, radius 1) cuts its thin links (the
    foramina, the third ventricle's slit), and the pieces of at least `VENTRICLE_MIN_VOXELS`
    voxels are kept: the frontal horns, bodies and atria of both lateral ventricles (about
    14 ml on Colin27). The thin temporal horns are not included.
    """
    from scipy import ndimage as ndi

    inner = ndi.distance_transform_edt(brain) > VENTRICLE_DEPTH_MM
    csf = (t1 < VENTRICLE_T1_MAX) & inner & (aal == 0)
    lab, n = ndi.label(csf)
    if n == 0:
        return np.zeros_like(brain, dtype=bool)
    sizes = ndi.sum(csf, lab, range(1, n + 1))
    body = lab == int(np.argmax(sizes)) + 1
    opened = ndi.binary_opening(body, structure=ndi.generate_binary_structure(3, 1))
    lab, n = ndi.label(opened)
    sizes = ndi.sum(opened, lab, range(1, n + 1)) if n else np.zeros(0)
    return np.isin(lab, np.flatnonzero(sizes >= VENTRICLE_MIN_VOXELS) + 1)


def read_aal_names(path: Path) -> dict[int, str]:
    """AAL's label table: lines `index name code`."""
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    if not names:
        raise InputError(f"{path}: no 'index name' lines (the AAL label table)")
    return names


def aal_groups(names: dict[int, str]) -> dict[str, list[int]]:
    """Concept -> AAL label ids (each region to the first group whose pattern matches its name)."""
    out: dict[str, list[int]] = {g: [] for g in AAL_GROUPS}
    for label, name in sorted(names.items()):
        for group, patterns in AAL_GROUPS.items():
            if any(re.match(p, name) for p in patterns):
                out[group].append(label)
                break
    return out


class MricronSource(Source):
    default_instances = "semantic"

    def __init__(self, spec: DatasetSpec) -> None:
        root = Path(spec.path)
        concepts = list(spec.concepts or CONCEPTS)
        unknown = [c for c in concepts if c not in (*CONCEPTS, *DERIVED_CONCEPTS)]
        if unknown:
            raise ConfigError(
                f"dataset {spec.name or root.name}: unknown mricron concept '{unknown[0]}'; "
                f"choose from: {', '.join((*CONCEPTS, *DERIVED_CONCEPTS))}"
            )
        if spec.labels is not None or spec.concept is not None:
            raise ConfigError(
                "mricron datasets build their dictionary from the atlas; select concepts with `concepts:` instead of labels/concept"
            )
        bad = [s for s in spec.image_sources if s not in IMAGE_SOURCES]
        if bad or not spec.image_sources:
            raise ConfigError(f"dataset {root}: image_sources must be among {', '.join(IMAGE_SOURCES)}, got {list(spec.image_sources)}")
        derived = "lateral ventricle" in concepts
        files = {n: root / f"{n}.nii.gz" for n in (*spec.image_sources, "ch2bet", "aal", *(("ch2",) if derived else ()))}
        files["aal_names"] = root / "aal.nii.txt"
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise InputError(f"mricron-data file '{missing[0]}' is missing; install it with `apt-get install mricron-data`")
        super().__init__(spec, LabelDictionary({i + 1: c for i, c in enumerate(concepts)}))
        if self.spec.name is None and root == DEFAULT_DIR:
            self.name = "mricron"
        self.files = files
        self.block = spec.split_block or DEFAULT_BLOCK
        self.groups = aal_groups(read_aal_names(files["aal_names"]))

    @property
    def exclusive(self) -> bool:
        return "brain" not in self.concepts

    @functools.cached_property
    def volumes(self) -> dict[str, np.ndarray]:
        vols = {}
        for name in ("ch2bet", "aal", *self.spec.image_sources, *(("ch2",) if "ch2" in self.files else ())):
            if name not in vols:
                vols[name], _ = load_volume(self.files[name])
        shape = vols["aal"].shape
        for name, v in vols.items():
            if v.shape != shape:
                raise InputError(f"{self.files[name]}: grid {list(v.shape)} differs from the atlas grid {list(shape)}")
        out = {"brain": vols["ch2bet"] > 0, "aal": vols["aal"].astype(np.int32)}
        if "lateral ventricle" in self.concepts:
            out["lateral ventricle"] = lateral_ventricles(vols["ch2"], out["brain"], out["aal"])
        for name in self.spec.image_sources:
            out[f"image:{name}"] = volume_to_uint8(vols[name], self.spec.window)
        return out

    def _masks(self, axis: str, index: int) -> dict[int, np.ndarray]:
        brain = take_slice(self.volumes["brain"], axis, index)
        aal = take_slice(self.volumes["aal"], axis, index)
        out = {}
        for ci, concept in enumerate(self.concepts):
            if concept == "brain":
                m = brain
            elif concept in DERIVED_CONCEPTS:
                m = take_slice(self.volumes[concept], axis, index)
            else:
                m = np.isin(aal, self.groups[concept])
            if m.any():
                out[ci] = m
        return out

    @functools.cache  # noqa: B019 - a source lives as long as its run
    def index(self) -> list[tuple[SampleRef, frozenset[int]]]:
        brain = self.volumes["brain"]
        out = []
        for axis in self.spec.axes:
            ax = AXES[axis]
            area = brain.sum(axis=tuple(a for a in range(3) if a != ax))
            total = brain.size / brain.shape[ax]
            for i in range(0, brain.shape[ax], self.spec.slice_stride):
                if area[i] < MIN_BRAIN_FRACTION * total:
                    continue
                present = frozenset(self._masks(axis, i))
                group = slice_group("colin27", axis, i, self.block)
                for src in self.spec.image_sources:
                    out.append((SampleRef(self.name, f"{src}:{axis}:{i:03d}", group), present))
        return out

    def refs(self) -> list[SampleRef]:
        return [r for r, _ in self.index()]

    def load(self, ref: SampleRef) -> Annotation:
        src, axis, idx = ref.key.split(":")
        i = int(idx)
        image = take_slice(self.volumes[f"image:{src}"], axis, i)
        return Annotation(to_uint8_rgb(image), self._masks(axis, i))
