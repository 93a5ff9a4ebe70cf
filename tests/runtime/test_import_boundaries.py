"""The layer rules of docs/architecture.md, checked on the sources (static and dynamic imports).

- the runtime (`medsam3_rt`) never imports torch, transformers, onnx, export, training or bench;
- the bench package (`medsam3_bench`) never imports torch, transformers, export or training: baselines
  reach it through the `medsam3_bench.candidates` entry-point group;
- backends never import the tracker; the tracker never imports I/O;
- export never imports training.

An import is any of: `import x`, `from x import y` (relative ones resolved), a call
`importlib.import_module("x")` / `import_module("x")` / `__import__("x")` with a literal name,
or a string literal that names a module of a forbidden package (`"medsam3_export.cli"`,
`"medsam3_export.cli:app"`: what an entry point or a lazy import would carry). Docstrings are prose.
The checker is tested on planted violations, so a rule that silently stopped working fails too.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

# import name -> folder in the repository
PACKAGES = {"medsam3_rt": "medsam3_rt", "medsam3_export": "export", "medsam3_training": "training", "medsam3_bench": "bench"}
THIRD_PARTY_HEAVY = {"torch", "transformers", "onnx", "onnxscript"}
OWN = set(PACKAGES)


@dataclass(frozen=True)
class Rule:
    what: str
    source: str  # module prefix the rule applies to
    forbidden: frozenset[str]  # module prefixes it must not import


RULES = (
    Rule("the runtime stands alone", "medsam3_rt", frozenset({*THIRD_PARTY_HEAVY, "medsam3_export", "medsam3_training", "medsam3_bench"})),
    Rule(
        "the bench package finds baselines by entry point",
        "medsam3_bench",
        frozenset({*THIRD_PARTY_HEAVY, "medsam3_export", "medsam3_training"}),
    ),
    Rule("backends never import the tracker", "medsam3_rt.backends", frozenset({"medsam3_rt.tracker"})),
    Rule("the tracker never imports I/O", "medsam3_rt.tracker", frozenset({"medsam3_rt.io"})),
    Rule("export never imports training", "medsam3_export", frozenset({"medsam3_training"})),
)

_MODULE_STRING = re.compile(rf"^({'|'.join(sorted(OWN))})(\.[A-Za-z_]\w*)*(:[A-Za-z_][\w.]*)?$")
_DYNAMIC = {"import_module", "__import__"}


def module_of(path: Path, root: Path) -> str:
    for name, folder in PACKAGES.items():
        base = root / folder
        if path.is_relative_to(base):
            parts = [name, *path.relative_to(base).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def imports_of(path: Path, root: Path) -> list[tuple[int, str, str]]:
    """(line, kind, module) for every static, dynamic and string-named import of one file."""
    module = module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docs = _docstrings(tree)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, "import", a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                found += [(node.lineno, "import", target)]
                if not node.module:
                    found += [(node.lineno, "import", f"{target}.{a.name}") for a in node.names]
            elif node.module:
                found += [(node.lineno, "import", node.module)]
                found += [(node.lineno, "import", f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if name in _DYNAMIC and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, "dynamic import", node.args[0].value))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and _MODULE_STRING.match(node.value.strip())
        ):
            found.append((node.lineno, "module string", node.value.strip().partition(":")[0]))
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every import in the tree at `root` that breaks one of RULES."""
    out: dict[tuple[str, int, str], str] = {}  # one finding per place and rule
    for folder in PACKAGES.values():
        for path in sorted((root / folder).rglob("*.py")):
            module = module_of(path, root)
            rules = [r for r in RULES if _under(module, r.source)]
            for line, kind, target in imports_of(path, root) if rules else ():
                for rule in rules:
                    where = (str(path.relative_to(root)), line, rule.what)
                    if where not in out and any(_under(target, f) for f in rule.forbidden):
                        out[where] = f"{where[0]}:{line}: {kind} of {target} ({rule.what})"
    return list(out.values())


def test_the_tree_keeps_every_layer_rule() -> None:
    assert violations(REPO) == []


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for folder in PACKAGES.values():
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("*.onnx", "*.data", "demo", "__pycache__", "*.gz"))
    return root


PLANTS = {
    "static import": ("medsam3_rt/model.py", "import medsam3_export.exporter\n"),
    "static from-import": ("medsam3_rt/cli/info.py", "from medsam3_training import cli\n"),
    "import_module": ("medsam3_rt/segmenter.py", "import importlib\n_x = importlib.import_module('medsam3_export.checkpoint')\n"),
    "__import__": ("medsam3_rt/volume.py", "_x = __import__('medsam3_bench.runner')\n"),
    "entry-point string": ("medsam3_rt/cli/main.py", "_EP = 'medsam3_export.commands:export_app'\n"),
    "relative import into the tracker": ("medsam3_rt/backends/ort.py", "from ..tracker import memory\n"),
    "tracker to I/O": ("medsam3_rt/tracker/__init__.py", "from ..io import images\n"),
    "export to training": ("export/presets.py", "import medsam3_training.config\n"),
    "bench to export": ("bench/runner.py", "from medsam3_export import bench_baseline\n"),
}


@pytest.mark.parametrize("kind", list(PLANTS))
def test_the_checker_catches_a_planted_violation(tmp_path: Path, kind: str) -> None:
    root = _copy(tmp_path)
    rel, code = PLANTS[kind]
    target = root / rel
    target.write_text(target.read_text(encoding="utf-8") + "\n" + code, encoding="utf-8")
    found = violations(root)
    assert len(found) == 1 and found[0].startswith(rel + ":"), found


def test_docstrings_may_name_other_packages(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    target = root / "medsam3_rt" / "model.py"
    target.write_text(target.read_text(encoding="utf-8") + '\n\ndef f() -> None:\n    """See medsam3_export.exporter."""\n')
    assert violations(root) == []


def test_segmentation_runs_without_loading_torch(tiny_export: Path) -> None:
    forbidden = sorted(THIRD_PARTY_HEAVY | {"medsam3_export", "medsam3_training", "medsam3_bench"})
    code = f"""
import sys, numpy as np
import medsam3_rt, medsam3_rt.cli.main
seg = medsam3_rt.load({str(tiny_export)!r})
res = seg.segment(np.zeros((64, 80), np.uint8) + 100, "liver")
assert res.masks.shape == (1, 64, 80)
bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})
assert not bad, bad
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
