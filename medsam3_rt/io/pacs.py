"""A PACS round trip over DICOMweb: find a study's series (QIDO-RS), pull them (WADO-RS),
segment, store a DICOM-SEG per series back (STOW-RS).

Resumable and idempotent per series: a SEG's UIDs are derived from the source instances,
the model and the prompts (`SegProvenance.fingerprint`), so before pulling anything the run
asks the PACS whether that SEG series already exists, and skips the series if it does. A
rerun after a crash, a refusal or a timeout therefore finishes the study without storing a
duplicate. Series that cannot be segmented (not one volume, still arriving) are reported and
the rest of the study goes on; an unreachable, refusing or silent PACS stops the run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import InputError, Medsam3Error, MissingDependencyError, PacsError, first_line
from ..manifest import INTENDED_USE
from .atomic import atomic_write_text, remove_stale_temporaries
from .dicom_seg import SEG_SUFFIX, SegProvenance, build_dicom_seg, highdicom, seg_uids, segments_for
from .seg_codes import ConceptMap

# Series a segmentation model has nothing to do with (objects, reports, structure sets, ...).
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "DOC", "FID", "AU", "ECG"})
PASSWORD_ENV = "MEDSAM3_RT_PACS_PASSWORD"


def dicomweb_url(url: str) -> str:
    """`dicomweb+http://host/dicom-web` or `http(s)://...` -> the HTTP(S) root of the DICOMweb API."""
    base = url[len("dicomweb+") :] if url.startswith("dicomweb+") else url
    if not base.startswith(("http://", "https://")):
        raise InputError(f"'{url}' is not a DICOMweb URL (http://host:port/dicom-web, optionally prefixed dicomweb+)")
    return base.rstrip("/")


@dataclass(frozen=True)
class PacsConfig:
    url: str
    timeout_s: float = 30.0  # per request: connect and each read
    retries: int = 2  # extra attempts on 408/429/503/504
    user: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class SeriesInfo:
    uid: str
    modality: str
    description: str
    number: int | None
    instances: int | None  # as the PACS reports it (NumberOfSeriesRelatedInstances), if it does


def _value(item: dict, tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


class Pacs:
    """dicomweb-client with its failures turned into one-line `PacsError`s."""

    def __init__(self, config: PacsConfig) -> None:
        try:
            from dicomweb_client.api import DICOMwebClient
            from dicomweb_client.session_utils import create_session, create_session_from_user_pass
        except ImportError as e:
            raise MissingDependencyError(
                f"`medsam3-rt pacs` needs the 'dicom' extra ({e.name or e} is not installed): pip install 'medsam3-rt[dicom]'"
            ) from None
        self.config = config
        self.url = dicomweb_url(config.url)
        if config.user is not None:
            session = create_session_from_user_pass(config.user, config.password or "")
        else:
            session = create_session()
        self.client = DICOMwebClient(self.url, session=session, timeout=config.timeout_s)
        self.client.set_http_retry_params(retry=config.retries > 0, max_attempts=config.retries + 1, wait_exponential_multiplier=200)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.HTTPError as e:
            r = e.response
            code, reason = (r.status_code, r.reason) if r is not None else ("?", first_line(e))
            hint = f" (check --user and ${PASSWORD_ENV})" if code in (401, 403) else ""
            raise PacsError(f"the PACS at {self.url} refused to {what}: HTTP {code} {reason}{hint}") from None
        except requests.exceptions.Timeout:
            raise PacsError(f"the PACS at {self.url} did not answer within {self.config.timeout_s:g} s ({what}); raise --timeout") from None
        except requests.exceptions.ConnectionError as e:
            raise PacsError(f"cannot reach the PACS at {self.url} to {what}: {first_line(e, 160)}") from None
        except requests.exceptions.RequestException as e:
            raise PacsError(f"the PACS at {self.url} failed to {what}: {first_line(e)}") from None
        except Medsam3Error:
            raise
        except Exception as e:  # retrying.RetryError, malformed multipart/JSON answers, ...
            raise PacsError(f"the PACS at {self.url} failed to {what}: {type(e).__name__}: {first_line(e)}") from None

    def series(self, study_uid: str) -> list[SeriesInfo]:
        """The study's series (QIDO-RS); an unknown study is an input error."""
        found = self._call(
            f"search study {study_uid}",
            self.client.search_for_series,
            study_uid,
            fields=["00201209", "0008103E", "00200011"],
            get_remaining=True,
        )
        if not found:
            raise InputError(f"study {study_uid} is not on the PACS at {self.url}")
        out = []
        for item in found:
            number, count = _value(item, "00200011"), _value(item, "00201209")
            out.append(
                SeriesInfo(
                    str(_value(item, "0020000E")),
                    str(_value(item, "00080060") or ""),
                    str(_value(item, "0008103E") or ""),
                    int(number) if number is not None else None,
                    int(count) if count is not None else None,
                )
            )
        return sorted(out, key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        found = self._call(
            f"list the instances of series {series_uid}",
            self.client.search_for_instances,
            study_uid,
            series_uid,
            get_remaining=True,
        )
        return sorted(str(_value(item, "00080018")) for item in found)

    def seg_references(self, study_uid: str, series_uid: str) -> set[str] | None:
        """Series UIDs an existing SEG series references (WADO-RS metadata); None if the series does not exist."""
        found = self._call(
            f"search series {series_uid}",
            self.client.search_for_series,
            study_uid,
            search_filters={"SeriesInstanceUID": series_uid},
        )
        if not found:
            return None
        meta = self._call(f"read the metadata of series {series_uid}", self.client.retrieve_series_metadata, study_uid, series_uid)
        refs: set[str] = set()
        for item in meta:
            for ref in item.get("00081115", {}).get("Value", []):  # ReferencedSeriesSequence
                uid = _value(ref, "0020000E")
                if uid:
                    refs.add(str(uid))
        return refs

    def pull(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """WADO-RS: every instance of the series as a file in `folder`."""
        datasets = self._call(f"retrieve series {series_uid}", self.client.retrieve_series, study_uid, series_uid)
        for k, ds in enumerate(datasets):
            ds.save_as(folder / f"{k:05d}.dcm", enforce_file_format=True)
        return len(datasets)

    def store(self, ds: Any) -> None:
        """STOW-RS one instance; a failure the PACS reports in its answer is a refusal, too."""
        answer = self._call(f"store SEG {ds.SOPInstanceUID}", self.client.store_instances, [ds], str(ds.StudyInstanceUID))
        failed = list(getattr(answer, "FailedSOPSequence", []) or [])
        if failed:
            reason = failed[0].get("FailureReason", "?")
            raise PacsError(f"the PACS at {self.url} refused to store SEG {ds.SOPInstanceUID}: failure reason {reason} (STOW-RS)")


@dataclass
class SeriesOutcome:
    series_uid: str
    description: str
    modality: str
    status: str  # "stored" | "exists" | "skipped" | "failed" | "would segment"
    seg_series_uid: str = ""
    message: str = ""
    volumes_ml: dict[str, float] = field(default_factory=dict)


@dataclass
class StudyJob:
    """What to do with one study; `segmenter` is created only when some series needs segmenting."""

    study_uid: str
    prompts: Sequence[str]
    provenance: SegProvenance
    load_segmenter: Callable[[], Any]
    concepts: ConceptMap = field(default_factory=ConceptMap)
    series_filter: Sequence[str] = ()
    axis: str = "axial"
    window: Any = None
    bidirectional: bool = False
    stream_options: Any = None
    output: Path | None = None
    dry_run: bool = False
    progress: Callable[[str], None] = lambda message: None


def run_study(pacs: Pacs, job: StudyJob) -> list[SeriesOutcome]:
    """Segment every image series of a study that has no SEG from this model and these prompts yet."""
    highdicom()  # fail before any pull when the extra is missing
    all_series = pacs.series(job.study_uid)
    known = {s.uid for s in all_series}
    missing = [uid for uid in job.series_filter if uid not in known]
    if missing:
        raise InputError(f"series {', '.join(missing)} not in study {job.study_uid} (it has: {', '.join(sorted(known))})")
    segmenter = None
    outcomes: list[SeriesOutcome] = []
    labels = list(job.prompts)
    for info in all_series:
        if job.series_filter and info.uid not in job.series_filter:
            continue
        out = SeriesOutcome(info.uid, info.description, info.modality, "skipped")
        outcomes.append(out)
        if info.modality.upper() in NON_IMAGE_MODALITIES:
            out.message = f"modality {info.modality}: not an image series"
            if job.series_filter:
                out.status, out.message = "failed", f"series {info.uid} is a {info.modality} series, not images"
            continue
        sources = pacs.instance_uids(job.study_uid, info.uid)
        seg_series, _ = seg_uids(job.provenance.fingerprint(sources, labels, False))
        out.seg_series_uid = seg_series
        refs = pacs.seg_references(job.study_uid, seg_series)
        if refs is not None:
            if info.uid not in refs:
                raise PacsError(f"series {seg_series} on the PACS does not reference series {info.uid}; refusing to overwrite it")
            out.status, out.message = "exists", "SEG already stored"
            job.progress(f"series {info.uid}: SEG {seg_series} already stored, skipped")
            continue
        if job.dry_run:
            out.status = "would segment"
            continue
        if segmenter is None:
            segmenter = job.load_segmenter()
        job.progress(f"series {info.uid} ({info.description or info.modality}): pulling {len(sources)} instances")
        try:
            _segment_series(pacs, job, info, sources, segmenter, out)
        except InputError as e:
            out.status, out.message = "failed", e.message
            job.progress(f"series {info.uid}: {e.message}")
    return outcomes


def _segment_series(pacs: Pacs, job: StudyJob, info: SeriesInfo, sources: list[str], segmenter: Any, out: SeriesOutcome) -> None:
    from ..volume import new_volume_stream, segment_volume
    from .volumes import read_dicom_series

    with tempfile.TemporaryDirectory(prefix="medsam3-rt-pacs-") as tmp:
        folder = Path(tmp)
        pulled = pacs.pull(job.study_uid, info.uid, folder)
        if pulled != len(sources) or (info.instances is not None and pulled != info.instances):
            raise InputError(
                f"series {info.uid}: the PACS lists {info.instances or len(sources)} instances but returned {pulled} "
                "(the study is still arriving or half-stored); rerun later"
            )
        try:
            volume = read_dicom_series(folder, job.axis)  # type: ignore[arg-type]
        except InputError as e:
            why = e.message.replace(f"{folder}: ", "").replace(str(folder), "the series")  # no temp paths in messages
            raise InputError(f"series {info.uid}: {why}") from None
        got = sorted(str(v) for v in _sop_uids(volume.files))
        if got != sources:  # instances arrived between QIDO and WADO: the fingerprint would be wrong
            raise InputError(f"series {info.uid} changed while it was pulled; rerun")
        stream = new_volume_stream(segmenter, list(job.prompts), volume, window=job.window, options=job.stream_options, mode="auto")
        result = segment_volume(stream, volume, bidirectional=job.bidirectional)
        seg = build_dicom_seg(volume, result.labels, segments_for(job.prompts, job.concepts), job.provenance)
    if str(seg.SeriesInstanceUID) != out.seg_series_uid:
        raise InputError(f"series {info.uid}: the SEG's UID differs from the one checked on the PACS (internal inconsistency)")
    out.volumes_ml = {p: round(v, 4) for p, v in result.prompt_volumes_ml.items()}
    seg_path = job.output / f"{info.uid}{SEG_SUFFIX}" if job.output is not None else None
    if seg_path is not None:  # the local copy is written whole before the PACS sees it
        from .atomic import atomic_path

        remove_stale_temporaries(seg_path)
        with atomic_path(seg_path) as tmp_seg:
            seg.save_as(tmp_seg, enforce_file_format=True)
    pacs.store(seg)
    if pacs.seg_references(job.study_uid, out.seg_series_uid) is None:
        raise PacsError(
            f"the PACS at {pacs.url} answered the store of SEG {seg.SOPInstanceUID} but does not list it afterwards "
            "(it filtered or dropped the object)"
        )
    out.status, out.message = "stored", f"{len(job.prompts)} segments"
    if job.output is not None:  # the record that says "stored" appears only once the PACS lists the SEG
        _write_record(job.output, info, seg, out)
    job.progress(f"series {info.uid}: stored SEG {out.seg_series_uid}")


def _sop_uids(files: Sequence[Path]) -> list[str]:
    import pydicom

    return [str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID) for f in files]


def _write_record(folder: Path, info: SeriesInfo, seg: Any, out: SeriesOutcome) -> None:
    record = {
        "series_uid": info.uid,
        "series_description": info.description,
        "seg_series_uid": out.seg_series_uid,
        "seg_sop_instance_uid": str(seg.SOPInstanceUID),
        "seg_file": f"{info.uid}{SEG_SUFFIX}",
        "stored": True,
        "segments": [str(s.SegmentLabel) for s in seg.SegmentSequence],
        "volumes_ml": out.volumes_ml,
        "producer": f"medsam3-rt {__version__}",
        "intended_use": INTENDED_USE,
    }
    atomic_write_text(folder / f"{info.uid}.json", json.dumps(record, indent=2, ensure_ascii=False))
