"""Coded concepts for DICOM-SEG segments: text prompts -> SNOMED CT category + type codes.

A PACS viewer groups and colours segments by their coded concepts, not by free text. The
built-in map names codes by their keyword in pydicom's bundled tables (`pydicom.sr.codedict`,
generated from DICOM PS3.16), so every value and meaning is looked up there, never typed in
by hand: a code that pydicom does not know cannot be in the map. Categories are from CID 7150
(Segmentation Property Categories). Users add or override concepts with a JSON (or YAML)
file. A prompt that is in neither gets a private, deterministic code (scheme `99MEDSAM3`)
whose meaning is the prompt itself, and says so: it is not a SNOMED CT concept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

PRIVATE_SCHEME = "99MEDSAM3"  # DICOM private coding schemes start with "99" (PS3.3 8.2)
PRIVATE_SCHEME_NAME = "medsam3-rt free-text prompts (not a standard terminology)"
MAX_MEANING = 64  # CodeMeaning and SegmentLabel are LO: 64 characters


@dataclass(frozen=True)
class Coded:
    """One code: what DICOM's Code Sequence macro holds."""

    value: str
    scheme: str
    meaning: str

    def as_dict(self) -> dict[str, str]:
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}


@dataclass(frozen=True)
class Concept:
    """A segment's property category and type (+ optional type modifier) and where they came from."""

    category: Coded
    type: Coded
    modifier: Coded | None = None
    source: str = "built-in"  # "built-in" | "file:<path>" | "free text"

    @property
    def coded(self) -> bool:
        return self.type.scheme != PRIVATE_SCHEME


# category keyword (pydicom SCT name), type keyword: prompt -> concept. Synonyms share a row.
_ANATOMY = "AnatomicalStructure"
_ABNORMAL = "MorphologicallyAbnormalStructure"
_SUBSTANCE = "BodySubstance"
_OBJECT = "PhysicalObject"
_TISSUE = "Tissue"

BUILTIN: dict[str, tuple[str, str]] = {
    # brain (the demo model's concepts, plus neighbours)
    "brain": (_ANATOMY, "Brain"),
    "lateral ventricle": (_ANATOMY, "LateralVentricle"),
    "lateral ventricles": (_ANATOMY, "LateralVentricle"),
    "third ventricle": (_ANATOMY, "ThirdVentricle"),
    "brain ventricle": (_ANATOMY, "BrainVentricle"),
    "ventricles": (_ANATOMY, "BrainVentricle"),
    "frontal lobe": (_ANATOMY, "FrontalLobe"),
    "parietal lobe": (_ANATOMY, "ParietalLobe"),
    "temporal lobe": (_ANATOMY, "TemporalLobe"),
    "occipital lobe": (_ANATOMY, "OccipitalLobe"),
    "thalamus": (_ANATOMY, "Thalamus"),
    "cerebellum": (_ANATOMY, "Cerebellum"),
    "brain stem": (_ANATOMY, "BrainStem"),
    "brainstem": (_ANATOMY, "BrainStem"),
    "hippocampus": (_ANATOMY, "Hippocampus"),
    "amygdala": (_ANATOMY, "Amygdala"),
    "caudate nucleus": (_ANATOMY, "CaudateNucleus"),
    "putamen": (_ANATOMY, "Putamen"),
    "corpus striatum": (_ANATOMY, "CorpusStriatum"),
    "corpus callosum": (_ANATOMY, "CorpusCallosum"),
    "white matter": (_TISSUE, "WhiteMatter"),
    "gray matter": (_TISSUE, "GrayMatter"),
    "grey matter": (_TISSUE, "GrayMatter"),
    "cerebral cortex": (_ANATOMY, "CerebralCortex"),
    "cerebrospinal fluid": (_SUBSTANCE, "CerebrospinalFluid"),
    "csf": (_SUBSTANCE, "CerebrospinalFluid"),
    "spinal cord": (_ANATOMY, "SpinalCord"),
    "skull": (_ANATOMY, "Skull"),
    # head, neck, thorax, abdomen, pelvis
    "head": (_ANATOMY, "Head"),
    "fetal head": (_ANATOMY, "Head"),  # no "fetal head" concept in the tables: the structure is a head
    "eye": (_ANATOMY, "Eye"),
    "lens": (_ANATOMY, "Lens"),
    "retina": (_ANATOMY, "Retina"),
    "optic disc": (_ANATOMY, "OpticNerveHead"),
    "optic nerve head": (_ANATOMY, "OpticNerveHead"),
    "thyroid": (_ANATOMY, "Thyroid"),
    "thyroid gland": (_ANATOMY, "Thyroid"),
    "trachea": (_ANATOMY, "Trachea"),
    "esophagus": (_ANATOMY, "Esophagus"),
    "lung": (_ANATOMY, "Lung"),
    "lungs": (_ANATOMY, "Lung"),
    "heart": (_ANATOMY, "Heart"),
    "aorta": (_ANATOMY, "Aorta"),
    "breast": (_ANATOMY, "Breast"),
    "liver": (_ANATOMY, "Liver"),
    "spleen": (_ANATOMY, "Spleen"),
    "pancreas": (_ANATOMY, "Pancreas"),
    "kidney": (_ANATOMY, "Kidney"),
    "kidneys": (_ANATOMY, "Kidney"),
    "adrenal gland": (_ANATOMY, "AdrenalGland"),
    "gallbladder": (_ANATOMY, "Gallbladder"),
    "stomach": (_ANATOMY, "Stomach"),
    "duodenum": (_ANATOMY, "Duodenum"),
    "small intestine": (_ANATOMY, "SmallIntestine"),
    "colon": (_ANATOMY, "Colon"),
    "rectum": (_ANATOMY, "Rectum"),
    "bladder": (_ANATOMY, "Bladder"),
    "urinary bladder": (_ANATOMY, "Bladder"),
    "prostate": (_ANATOMY, "Prostate"),
    "uterus": (_ANATOMY, "Uterus"),
    "ovary": (_ANATOMY, "Ovary"),
    "placenta": (_ANATOMY, "Placenta"),
    "umbilical cord": (_ANATOMY, "UmbilicalCord"),
    "pubic symphysis": (_ANATOMY, "SymphysisPubis"),
    "symphysis pubis": (_ANATOMY, "SymphysisPubis"),
    "lymph node": (_ANATOMY, "LymphNode"),
    "blood vessel": (_ANATOMY, "BloodVessel"),
    "vessel": (_ANATOMY, "BloodVessel"),
    "artery": (_ANATOMY, "Artery"),
    "vein": (_ANATOMY, "Vein"),
    "skin": (_ANATOMY, "Skin"),
    "bone": (_TISSUE, "Bone"),
    "muscle": (_TISSUE, "Muscle"),
    "vertebra": (_ANATOMY, "Vertebra"),
    "rib": (_ANATOMY, "Rib"),
    "femur": (_ANATOMY, "Femur"),
    # findings
    "polyp": (_ABNORMAL, "PolypOfColon"),  # the colon polyp datasets (Kvasir, CVC, ETIS); CID 6201
    "colon polyp": (_ABNORMAL, "PolypOfColon"),
    "tumor": (_ABNORMAL, "Neoplasm"),
    "tumour": (_ABNORMAL, "Neoplasm"),
    "neoplasm": (_ABNORMAL, "Neoplasm"),
    "lesion": (_ABNORMAL, "Lesion"),
    "skin lesion": (_ABNORMAL, "SkinLesion"),
    "mass": (_ABNORMAL, "Mass"),
    "nodule": (_ABNORMAL, "Nodule"),
    "thyroid nodule": (_ABNORMAL, "ThyroidNodule"),
    "cyst": (_ABNORMAL, "Cyst"),
    "hemorrhage": (_ABNORMAL, "Hemorrhage"),
    "haemorrhage": (_ABNORMAL, "Hemorrhage"),
    "edema": (_ABNORMAL, "Edema"),
    "oedema": (_ABNORMAL, "Edema"),
    # objects
    "instrument": (_OBJECT, "InstrumentDevice"),
    "surgical instrument": (_OBJECT, "InstrumentDevice"),
}


def normalise(prompt: str) -> str:
    """The lookup key of a prompt: lower case, single spaces."""
    return " ".join(prompt.lower().split())


def _sct(keyword: str) -> Coded:
    from pydicom.sr.codedict import codes

    code = getattr(codes.SCT, keyword)  # AttributeError: not in pydicom's tables (a test checks every row)
    return Coded(str(code.value), str(code.scheme_designator), str(code.meaning))


def builtin_concept(prompt: str) -> Concept | None:
    row = BUILTIN.get(normalise(prompt))
    return None if row is None else Concept(_sct(row[0]), _sct(row[1]), None, "built-in")


def free_text_concept(prompt: str) -> Concept:
    """A private code for an uncoded prompt: stable across runs (a hash of the normalised text)."""
    key = normalise(prompt)
    value = "P" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12].upper()
    meaning = prompt.strip()[:MAX_MEANING]
    return Concept(
        Coded("FREETEXT", PRIVATE_SCHEME, "Free-text prompt (not coded)"), Coded(value, PRIVATE_SCHEME, meaning), None, "free text"
    )


def _parse_code(value: Any, where: str) -> Coded:
    if isinstance(value, str):  # a keyword of pydicom's SNOMED CT table
        try:
            return _sct(value)
        except AttributeError:
            raise UsageError(
                f"{where}: '{value}' is not a SNOMED CT keyword of pydicom.sr.codedict; give {{value, scheme, meaning}}"
            ) from None
    if isinstance(value, Mapping):
        try:
            out = Coded(str(value["value"]), str(value["scheme"]), str(value["meaning"]))
        except KeyError as e:
            raise UsageError(f"{where}: a code needs 'value', 'scheme' and 'meaning' (missing {e})") from None
        if not out.value or not out.scheme or not out.meaning or len(out.value) > 64 or len(out.meaning) > MAX_MEANING:
            raise UsageError(f"{where}: code {out.as_dict()} has an empty field or one over 64 characters")
        return out
    raise UsageError(f"{where}: a code is a pydicom SNOMED CT keyword or an object {{value, scheme, meaning}}")


def load_concepts(path: str | os.PathLike[str]) -> dict[str, Concept]:
    """Read a user concept file: {prompt: {"category": code, "type": code, "modifier"?: code}}.

    A code is either a keyword of pydicom's SNOMED CT table ("Liver") or an object
    {"value": "10200004", "scheme": "SCT", "meaning": "Liver"}. JSON always; YAML when
    PyYAML is installed (.yaml/.yml).
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--codes {p}: no such file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UsageError(f"--codes {p}: YAML files need PyYAML (pip install pyyaml); or give a .json file") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, UsageError) as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(f"--codes {p}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} ({e})") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"--codes {p}: expected an object mapping prompts to {{category, type}}")
    out: dict[str, Concept] = {}
    for prompt, entry in data.items():
        where = f"--codes {p}: '{prompt}'"
        if not isinstance(entry, Mapping) or "category" not in entry or "type" not in entry:
            raise UsageError(f"{where}: each prompt needs 'category' and 'type'")
        modifier = _parse_code(entry["modifier"], where) if entry.get("modifier") is not None else None
        out[normalise(str(prompt))] = Concept(
            _parse_code(entry["category"], where), _parse_code(entry["type"], where), modifier, f"file:{p}"
        )
    return out


class ConceptMap:
    """Prompt -> Concept: the user's file first, then the built-in map, then the free-text fallback."""

    def __init__(self, extra: Mapping[str, Concept] | None = None) -> None:
        self.extra = {normalise(k): v for k, v in (extra or {}).items()}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None) -> ConceptMap:
        return cls(load_concepts(path) if path is not None else None)

    def concept(self, prompt: str) -> Concept:
        key = normalise(prompt)
        if key in self.extra:
            return self.extra[key]
        return builtin_concept(key) or free_text_concept(prompt)
