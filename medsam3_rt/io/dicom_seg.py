"""DICOM Segmentation (DICOM-SEG) objects from label volumes, with highdicom.

Why DICOM-SEG: a PACS stores and shows it next to its source series (same frame of
reference, one frame per source image it references), and each segment carries a coded
concept (`seg_codes`) instead of a file name. highdicom (the `dicom` extra) builds the
object and checks it against the IOD; it is imported only when a SEG is written or read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InputError, MissingDependencyError, UsageError
from .seg_codes import MAX_MEANING, PRIVATE_SCHEME, PRIVATE_SCHEME_NAME, Concept, ConceptMap
from .volumes import Volume

SEG_SUFFIX = ".seg.dcm"
EXTRA = "dicom"


def highdicom() -> Any:
    """highdicom, or a one-line error naming the extra that installs it."""
    try:
        import highdicom as hd
    except ImportError as e:
        raise MissingDependencyError(
            f"DICOM-SEG needs the '{EXTRA}' extra ({e.name or e} is not installed): pip install 'medsam3-rt[{EXTRA}]'"
        ) from None
    return hd


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: its label (the prompt, or prompt + object) and coded concept."""

    label: str
    concept: Concept
    tracking_id: str | None = None  # e.g. "lateral ventricle #3" for one tracked object


@dataclass(frozen=True)
class SegProvenance:
    """What made the segmentation: recorded in the SEG (algorithm identification) and in its UIDs."""

    model_name: str
    model_id: str  # e.g. the SHA-256 of the export's manifest.json
    options: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self, source_sop_uids: Sequence[str], labels: Sequence[str], fractional: bool) -> str:
        """Same source instances + model + prompts + options -> same fingerprint (and the same SEG UIDs)."""
        key = {
            "sources": sorted(source_sop_uids),
            "model": self.model_id,
            "segments": list(labels),
            "fractional": fractional,
            "options": self.options,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def seg_uids(fingerprint: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) derived from the fingerprint: a rerun makes the same object."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[fingerprint, "series"]), generate_uid(entropy_srcs=[fingerprint, "instance"])


def segments_for(prompts: Sequence[str], concepts: ConceptMap | None = None) -> list[SegmentSpec]:
    cmap = concepts or ConceptMap()
    return [SegmentSpec(p, cmap.concept(p)) for p in prompts]


def _code(hd: Any, c: Any) -> Any:
    return hd.sr.CodedConcept(value=c.value, scheme_designator=c.scheme, meaning=c.meaning)


def _source_datasets(volume: Volume) -> list[Any]:
    import pydicom

    if volume.kind != "dicom" or not volume.files:
        raise UsageError(f"{volume.source}: DICOM-SEG needs a DICOM series as input (got {volume.kind}); write NIfTI labels instead")
    try:
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.files]
    except Exception as e:  # pydicom raises many types for damaged headers
        raise InputError(f"{volume.source}: cannot re-read the source series' headers ({e})") from None


def build_dicom_seg(
    volume: Volume,
    labels: np.ndarray,
    segments: Sequence[str] | Sequence[SegmentSpec],
    provenance: SegProvenance,
    *,
    concepts: ConceptMap | None = None,
    series_description: str | None = None,
    series_number: int = 9901,
) -> Any:
    """A highdicom Segmentation of `volume` (a DICOM series) from voxel-order labels.

    `labels` is either an integer label map of `volume.shape` (value k = segment k, 0 =
    background) -> BINARY, or a stack (n_segments, *volume.shape): bool -> BINARY (segments
    may overlap, e.g. one per tracked object), float in [0, 1] -> FRACTIONAL (probability).
    """
    hd = highdicom()
    specs = [s if isinstance(s, SegmentSpec) else SegmentSpec(s, (concepts or ConceptMap()).concept(s)) for s in segments]
    if not specs:
        raise UsageError("a DICOM-SEG needs at least one segment")
    sources = _source_datasets(volume)
    labels = np.asarray(labels)
    fractional = False
    if labels.shape == tuple(volume.shape):
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > len(specs):
            raise InputError(
                f"label map values must be integers 0..{len(specs)} (one per segment), got {labels.dtype} up to {labels.max()}"
            )
        frames = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8)  # (slices, rows, cols)
    elif labels.shape == (len(specs), *volume.shape):
        stack = labels.transpose(3, 2, 1, 0)  # (slices, rows, cols, segments)
        if labels.dtype == bool:
            frames = np.ascontiguousarray(stack).astype(np.uint8)
        elif np.issubdtype(labels.dtype, np.floating):
            if not (np.isfinite(labels).all() and labels.min() >= 0.0 and labels.max() <= 1.0):
                raise InputError("fractional segment values must be finite and within [0, 1]")
            frames, fractional = np.ascontiguousarray(stack).astype(np.float32), True
        else:
            raise InputError(f"a segment stack must be bool (binary) or float in [0, 1] (fractional), got {labels.dtype}")
    else:
        raise InputError(
            f"labels of shape {list(labels.shape)} do not fit the series: expected {list(volume.shape)} or {[len(specs), *volume.shape]}"
        )
    source_uids = [str(ds.SOPInstanceUID) for ds in sources]
    fingerprint = provenance.fingerprint(source_uids, [s.label for s in specs], fractional)
    series_uid, sop_uid = seg_uids(fingerprint)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=(provenance.model_name or "medsam3-rt model")[:64],
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        version=f"medsam3-rt {__version__}"[:64],
        parameters={"model_sha256": provenance.model_id[:64], "fingerprint": fingerprint[:64]}
        | {k: str(v)[:64] for k, v in provenance.options.items()},
    )
    descriptions = []
    for n, spec in enumerate(specs, start=1):
        c = spec.concept
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=spec.label[:MAX_MEANING],
                segmented_property_category=_code(hd, c.category),
                segmented_property_type=_code(hd, c.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID.from_uuid(_uuid(fingerprint, n)) if spec.tracking_id else None,
                tracking_id=spec.tracking_id[:64] if spec.tracking_id else None,
            )
        )
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="medsam3-rt",
        manufacturer_model_name=(provenance.model_name or "medsam3-rt model")[:64],
        software_versions=f"medsam3-rt {__version__}",
        device_serial_number=provenance.model_id[:16] or "unknown",
        content_description="Text-prompted segmentation (research use only)",
        content_creator_name="medsam3-rt^",
        content_label="MEDSAM3RT",
        series_description=(series_description or f"SEG {', '.join(s.label for s in specs)} ({first.get('SeriesDescription', '')})")[:64],
        omit_empty_frames=bool(frames.any()),  # empty frames are implied (readers fill zeros); an all-empty SEG keeps them
    )
    if any(s.concept.type.scheme == PRIVATE_SCHEME for s in specs):
        from pydicom.dataset import Dataset

        item = Dataset()
        item.CodingSchemeDesignator = PRIVATE_SCHEME
        item.CodingSchemeName = PRIVATE_SCHEME_NAME
        item.CodingSchemeResponsibleOrganization = "medsam3-rt"
        seg.CodingSchemeIdentificationSequence = [*getattr(seg, "CodingSchemeIdentificationSequence", []), item]
    return seg


def _uuid(fingerprint: str, n: int) -> str:
    import uuid

    return str(uuid.UUID(hashlib.sha256(f"{fingerprint}:{n}".encode()).hexdigest()[:32]))


def write_dicom_seg(
    path: str | os.PathLike[str],
    volume: Volume,
    labels: np.ndarray,
    segments: Sequence[str] | Sequence[SegmentSpec],
    provenance: SegProvenance,
    *,
    concepts: ConceptMap | None = None,
    series_description: str | None = None,
) -> Any:
    """Build a DICOM-SEG (see `build_dicom_seg`) and write it atomically to `path`; returns the dataset."""
    from .atomic import atomic_path

    seg = build_dicom_seg(volume, labels, segments, provenance, concepts=concepts, series_description=series_description)
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return seg


@dataclass(frozen=True)
class SegReadBack:
    """A DICOM-SEG read back onto its source series' voxel grid."""

    labels: np.ndarray  # voxel order of the source Volume: (cols, rows, slices); BINARY -> label map
    segment_labels: tuple[str, ...]
    codes: tuple[tuple[str, str], ...]  # (category value, type value) per segment
    referenced_series_uid: str
    fractional: bool


def read_dicom_seg(path: str | os.PathLike[str], volume: Volume) -> SegReadBack:
    """Read a SEG with highdicom and place it on `volume`'s voxel grid (by referenced SOP instance)."""
    hd = highdicom()
    try:
        seg = hd.seg.segread(Path(path))
    except Exception as e:  # highdicom/pydicom raise many types
        raise InputError(f"{path}: not a readable DICOM-SEG ({e})") from None
    sources = _source_datasets(volume)
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    numbers = list(seg.segment_numbers)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=numbers,
        combine_segments=not fractional,
        relabel=True,
        rescale_fractional=True,
        skip_overlap_checks=True,
    )  # (slices, rows, cols) or (slices, rows, cols, segments)
    labels = pixels.transpose(2, 1, 0) if pixels.ndim == 3 else pixels.transpose(3, 2, 1, 0)
    descs = [seg.get_segment_description(n) for n in numbers]
    return SegReadBack(
        np.ascontiguousarray(labels),
        tuple(str(d.segment_label) for d in descs),
        tuple((str(d.segmented_property_category.value), str(d.segmented_property_type.value)) for d in descs),
        str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        fractional,
    )


def manifest_sha256(model_dir: str | os.PathLike[str]) -> str:
    """Identity of an export for provenance: the hash of its manifest (which records every graph's hash)."""
    p = Path(model_dir) / "manifest.json"
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


def seg_volume(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(label map, voxel -> RAS affine) of a BINARY SEG from its own plane positions, without the source series.

    Voxel order is (column, row, frame position) like `read_dicom_series`, so the affine compares
    directly with the NIfTI output's. Frames the SEG omits (empty) between stored ones are zeros.
    """
    hd = highdicom()
    seg = hd.seg.segread(Path(path))
    vol = seg.get_volume(combine_segments=True, relabel=True, skip_overlap_checks=True)
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # (col, row, slice) -> (slice, row, col)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(vol.affine, np.float64) @ perm
    return np.ascontiguousarray(np.asarray(vol.array).transpose(2, 1, 0)), affine


@dataclass(frozen=True)
class SegOutput:
    """`segment --format dicom-seg`: how a volume result becomes a SEG file (instead of NIfTI labels)."""

    provenance: SegProvenance
    concepts: ConceptMap = field(default_factory=ConceptMap)

    def write(self, path: str | os.PathLike[str], volume: Volume, labels: np.ndarray, prompts: Sequence[str]) -> dict[str, Any]:
        """Write the SEG; returns what the run's JSON records about it."""
        specs = segments_for(prompts, self.concepts)
        ds = write_dicom_seg(path, volume, labels, specs, self.provenance)
        return {
            "dicom_seg": {
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "series_instance_uid": str(ds.SeriesInstanceUID),
                "referenced_series_uid": str(volume.meta.get("series_uid", "")),
                "segments": [
                    {
                        "number": n,
                        "label": s.label,
                        "category": s.concept.category.as_dict(),
                        "type": s.concept.type.as_dict(),
                        "coded": s.concept.coded,
                    }
                    for n, s in enumerate(specs, start=1)
                ],
            }
        }


FORMATS = ("nifti", "dicom-seg")


def dicom_seg_output(
    fmt: str, jobs: Sequence[Any], model_dir: str | os.PathLike[str], codes: str | os.PathLike[str] | None, **options: Any
) -> SegOutput:
    """Check `segment --format` against the inputs before any work: DICOM-SEG needs DICOM series and highdicom."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    for job in jobs:
        if job.kind != "volume" or not Path(job.source).is_dir():
            raise UsageError(f"--format dicom-seg needs DICOM series folders as input; {job.source} is not one")
    highdicom()
    concepts = ConceptMap.from_file(codes)
    from ..manifest import load_manifest

    name = str(load_manifest(model_dir, verify="size").model.get("name") or Path(model_dir).name)
    return SegOutput(SegProvenance(name, manifest_sha256(model_dir), {k: v for k, v in options.items() if v is not None}), concepts)
