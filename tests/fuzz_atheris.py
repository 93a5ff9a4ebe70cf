"""Coverage-guided fuzzing of the loaders with atheris (libFuzzer). Not part of the pytest suite.

    pip install atheris
    python tests/fuzz_atheris.py image -atheris_runs=20000
    python tests/fuzz_atheris.py nifti -max_total_time=120
    python tests/fuzz_atheris.py pack|dicom|manifest ...   (any libFuzzer flag; a corpus folder may follow)

Targets: `image` (PNG/JPEG/BMP/TIFF bytes through `read_image`, the suffix picked by the first
byte), `nifti` (`read_nifti` + every slice), `dicom` (one file of a 5-slice CT series through
`read_dicom_series` + every slice), `pack` (`read_prompt_pack`), `manifest` (bytes of
manifest.json through `json.loads` + `parse_manifest`). Seeds are valid files written to a
temporary corpus. The property is the test suite's: a result or a `Medsam3Error`; any other
exception is reported by libFuzzer as a crash, with the input saved as crash-<sha1>.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["medsam3_rt"]):
    from medsam3_rt.errors import Medsam3Error
    from medsam3_rt.io import images as images_io
    from medsam3_rt.io.images import read_image
    from medsam3_rt.io.volumes import read_dicom_series, read_nifti
    from medsam3_rt.manifest import parse_manifest
    from medsam3_rt.prompt_pack import PromptPack, read_prompt_pack, write_prompt_pack

import cv2
import nibabel as nib
import numpy as np
import pydicom

WORK = Path(tempfile.mkdtemp(prefix="medsam3-atheris-"))
CT_SERIES = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
SUFFIXES = (".png", ".jpg", ".bmp", ".tif")
images_io.MAX_PIXELS = 1 << 20  # mutated headers must not make OpenCV allocate gigabytes in the fuzzer


def _scan(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (60 + 0.5 * xx + 40 * np.sin(yy / 5)).astype(np.uint8)


def seeds(target: str) -> list[bytes]:
    if target == "image":
        img = _scan(19, 23)
        return [bytes([k]) + cv2.imencode(ext, im)[1].tobytes() for k, ext in enumerate(SUFFIXES) for im in (img, np.dstack([img] * 3))]
    if target == "nifti":
        return [nib.Nifti1Image((np.arange(120).reshape(6, 5, 4) % 7).astype(np.int16), np.diag([0.8, 0.9, 2.5, 1])).to_bytes()]
    if target == "dicom":
        return [sorted(CT_SERIES.iterdir())[2].read_bytes()]
    if target == "pack":
        rng = np.random.default_rng(0)
        pack = PromptPack("ab" * 32, ("liver",), ("liver",), (3,), rng.normal(size=(1, 4, 8)).astype(np.float32), np.ones((1, 4), bool))
        write_prompt_pack(WORK / "seed.m3pack", pack)
        return [(WORK / "seed.m3pack").read_bytes()]
    if target == "manifest":
        if len(sys.argv) < 3 or not Path(sys.argv[2], "manifest.json").is_file():
            sys.exit("usage: fuzz_atheris.py manifest EXPORT_DIR [libFuzzer flags]: seeds from EXPORT_DIR/manifest.json")
        return [Path(sys.argv.pop(2), "manifest.json").read_bytes()]
    sys.exit(f"unknown target {target!r}; choose image, nifti, dicom, pack, manifest")


def one_input(target: str, data: bytes) -> None:
    try:
        if target == "image":
            if not data:
                return
            path = WORK / f"in{SUFFIXES[data[0] % len(SUFFIXES)]}"
            path.write_bytes(data[1:])
            read_image(path)
        elif target == "nifti":
            path = WORK / "in.nii"
            path.write_bytes(data)
            vol = read_nifti(path)
            for k in range(min(vol.num_slices, 16)):
                vol.slice(k)
        elif target == "dicom":
            folder = WORK / "series"
            if not folder.exists():
                shutil.copytree(CT_SERIES, folder)
            (folder / sorted(CT_SERIES.iterdir())[2].name).write_bytes(data)
            vol = read_dicom_series(folder)
            for k in range(vol.num_slices):
                vol.slice(k)
        elif target == "pack":
            path = WORK / "in.m3pack"
            path.write_bytes(data)
            read_prompt_pack(path)
        elif target == "manifest":
            try:
                decoded = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                return  # load_manifest turns these into ManifestError (tests/reliability/test_reliability_fuzz.py)
            parse_manifest(decoded)
    except Medsam3Error as e:
        assert "\n" not in e.message


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    target = sys.argv.pop(1)
    corpus = WORK / f"corpus-{target}"
    corpus.mkdir()
    for k, blob in enumerate(seeds(target)):
        (corpus / f"seed{k}").write_bytes(blob)
    args = [sys.argv[0], *sys.argv[1:]]
    if not any(not a.startswith("-") for a in args[1:]):
        args.append(str(corpus))
    atheris.Setup(args, lambda data: one_input(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
