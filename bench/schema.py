"""The bench result document: its schema id, stage names, and validation against `schemas/bench.v2.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medsam3_rt.errors import MissingDependencyError

SCHEMA_ID = "medsam3-rt.bench/2"
SCHEMA_FILE = Path(__file__).parent / "schemas" / "bench.v2.json"
IMAGE_STAGES = ("io", "preprocess", "text", "backbone", "detector", "postprocess")
TEXT_MISS_STAGES = ("tokenize", "text_encoder")
CURVE_LENGTHS = (50, 100, 200, 400)  # volume lengths whose streaming totals the curve reports
STREAM_STAGES = ("io", "preprocess", "backbone", "detector", "tracker", "merge_memory", "postprocess", "other")


def validate(result: dict[str, Any], *, required: bool = True) -> bool:
    """Check `result` against the JSON schema; False (not checked) without jsonschema unless `required`."""
    try:
        import jsonschema
    except ImportError as e:  # pragma: no cover - dev extra
        if required:
            raise MissingDependencyError("validating benchmark JSON needs jsonschema: pip install jsonschema") from e
        return False
    jsonschema.validate(result, json.loads(SCHEMA_FILE.read_text()))
    return True
