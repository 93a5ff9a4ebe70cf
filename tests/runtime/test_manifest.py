"""manifest.json validation: every broken export directory gets a one-line error naming the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import IntegrityError, ManifestError, ManifestVersionError
from medsam3_rt.manifest import MANIFEST_NAME, SCHEMA_VERSION, load_manifest, parse_manifest


@pytest.fixture()
def export_copy(tiny_export: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_export, dst)
    return dst


def _edit(model_dir: Path, change) -> None:
    path = model_dir / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_valid_manifest_round_trips(tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    assert set(m.graphs) == set(gc.DETECTOR_GRAPHS)
    assert parse_manifest(json.loads(json.dumps(m.to_json()))) == m
    assert m.producer["opset"] == 18 and m.producer["torch"] and m.producer["transformers"]
    assert m.parity["passed"] is True
    assert m.model["intended_use"].startswith("Research use only")
    assert not m.has_tracker and m.tracker is None


def test_missing_directory_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(ManifestError, match="has no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ManifestError, match="not a directory"):
        load_manifest(tmp_path / "f")


def test_corrupt_json(export_copy: Path) -> None:
    (export_copy / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(export_copy)


def test_newer_schema_version_names_the_upgrade(export_copy: Path) -> None:
    _edit(export_copy, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(ManifestVersionError, match=r"schema v2 .* pip install -U medsam3-rt"):
        load_manifest(export_copy)


def test_tampered_graph_is_named(export_copy: Path) -> None:
    path = export_copy / "detector.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=r"'detector.onnx' has SHA-256 .* tampered"):
        load_manifest(export_copy)
    load_manifest(export_copy, verify="size")  # same size: only the hash check catches it


def test_truncated_and_missing_files(export_copy: Path) -> None:
    path = export_copy / "image_backbone.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=r"'image_backbone.onnx' is 1000 bytes"):
        load_manifest(export_copy, verify="size")
    path.unlink()
    with pytest.raises(IntegrityError, match=r"'image_backbone.onnx' is listed .* but missing"):
        load_manifest(export_copy)


def test_contract_mismatch_is_reported(export_copy: Path) -> None:
    def rename(d: dict) -> None:
        d["graphs"]["detector"]["outputs"][0]["name"] = "scores"

    _edit(export_copy, rename)
    with pytest.raises(ManifestError, match=r"graph 'detector' declares I/O .*scores"):
        load_manifest(export_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("tokenizer"), "missing its 'tokenizer' section"),
        (lambda d: d["graphs"].pop("detector"), "no detector graph"),
        (lambda d: d["graphs"].update(mystery={"file": "x.onnx"}), "graph 'mystery'"),
        (lambda d: d.update(schema="other"), "not a medsam3-rt manifest"),
        (lambda d: d["files"].update({"../evil": {"sha256": "0", "bytes": 1}}), "relative path inside"),
        (lambda d: d["preprocess"].update(resize="letterbox"), "resize=letterbox"),
        (lambda d: d["dims"].update(image_size=225), "multiple of patch_size"),
    ],
)
def test_malformed_sections(export_copy: Path, change, message: str) -> None:
    _edit(export_copy, change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(export_copy)


def test_graph_file_that_belongs_to_another_graph(export_copy: Path) -> None:
    """Swap detector.onnx for the backbone file and fix the hashes: the runtime reads its I/O and refuses."""
    from medsam3_export.manifest_writer import file_entry

    import medsam3_rt

    shutil.copy(export_copy / "image_backbone.onnx", export_copy / "detector.onnx")
    entry = file_entry(export_copy, "detector.onnx")
    _edit(export_copy, lambda d: d["files"].update({"detector.onnx": {"sha256": entry.sha256, "bytes": entry.bytes}}))
    with pytest.raises(ManifestError, match=r"detector.onnx declares inputs \['pixel_values'\]"):
        medsam3_rt.load(export_copy, "ort-cpu")


def test_one_schema_file_shapes_the_manifest(tiny_export: Path) -> None:
    """The shipped JSON Schema accepts a real manifest, rejects bad shapes with its own messages, and stays open in model.source."""
    import jsonschema

    from medsam3_rt.errors import ManifestError
    from medsam3_rt.manifest import SCHEMA_FILE, check_schema, parse_manifest

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    base = json.loads((tiny_export / "manifest.json").read_text())
    check_schema(base)

    def message(edit) -> str:
        data = json.loads(json.dumps(base))
        edit(data)
        with pytest.raises(ManifestError) as e:
            parse_manifest(data)
        return str(e.value)

    assert message(lambda m: m["graphs"]["detector"].update(file=3)) == "manifest graph 'detector' needs a 'file'"
    assert message(lambda m: m["files"].update({"x.onnx": {"sha256": "ab"}})) == "manifest file entry 'x.onnx' needs 'sha256' and 'bytes'"
    assert message(lambda m: m["model"].update(source=[])) == "manifest 'model.source' must be an object"
    # several problems: the first section in the schema's order is named
    assert message(lambda m: (m.pop("producer"), m.pop("dims"))) == "manifest is missing its 'dims' section (or it is not a dict)"
    # fields other engineers add to model.source need no schema change
    data = json.loads(json.dumps(base))
    data["model"]["source"]["adapter"] = {"kind": "lora", "rank": 8}
    assert parse_manifest(data).model["source"]["adapter"]["rank"] == 8
