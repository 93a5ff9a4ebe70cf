"""The runtime must run with numpy + onnxruntime + opencv + tokenizers only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

FORBIDDEN = {"torch", "transformers", "medsam3_export", "medsam3_training", "onnx", "onnxscript"}


def test_runtime_sources_never_import_torch_or_export() -> None:
    offenders = []
    for path in (REPO / "medsam3_rt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_segmentation_runs_without_loading_torch(tiny_export: Path) -> None:
    code = f"""
import sys, numpy as np
import medsam3_rt, medsam3_rt.cli.main
seg = medsam3_rt.load({str(tiny_export)!r})
res = seg.segment(np.zeros((64, 80), np.uint8) + 100, "liver")
assert res.masks.shape == (1, 64, 80)
bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})
assert not bad, bad
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
