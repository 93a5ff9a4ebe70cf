"""Every documentation example marked `exec` runs, and prints what the page says it prints.

Pages: README.md, docs/**/*.md, cpp_bindings/README.md, benchmarks/README.md. A fenced block whose
info string contains the word `exec` (```bash exec, ```python exec) is one test case, named
`page:line`. The blocks of one page share a fresh working directory and run in page order, as a
reader pasting them one after the other would. `bash` blocks run with `bash -e -o pipefail` and
this test environment's bin folder first on PATH; `python` blocks run in a fresh interpreter. A
block must exit 0; when a plain ```text block follows it (only blank lines in between), the
block's output (stdout and stderr, interleaved) must match it under the rule in docs/index.md:

* both sides: trailing spaces and leading/trailing blank lines dropped; durations (`2.5 s`,
  `183.1 ms`, `0:00:09`) and hex digests of 16+ characters replaced by placeholders; the working
  directory's absolute path removed (`/tmp/x/out` reads `out`, `/tmp/x` reads `.`);
* a line that is only `...` (or `…`) stands for any number of lines, zero included; `...` inside
  a line stands for any text on that line;
* `1.25±0.05` in the expected text matches any number within 0.05 of 1.25;
* everything else must be equal, character for character.

Info-string options: `requires=cpp` (the block uses the C/C++ library, built once per checkout in
cpp_bindings/build-ci by tests/cpp/test_cpp_bindings.py's fixture; `build-cpp` in the working
directory points at that build; skipped with the fixture's reason when CMake, a compiler,
nlohmann-json or OpenVINO is missing), `requires=<module>` (skipped when the Python module is not installed).

The same pages' relative links must name existing files and, after `#`, existing headings.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:  # the fixture that builds the C/C++ library once per checkout, in cpp_bindings/build-ci
    from test_cpp_bindings import build  # noqa: F401

    HAVE_BUILD_FIXTURE = True
except ImportError:  # the C/C++ tests moved: use their build when it is there
    HAVE_BUILD_FIXTURE = False

REPO = Path(__file__).resolve().parents[2]
CPP_BUILD = REPO / "cpp_bindings" / "build-ci"


def doc_pages() -> list[Path]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pages += [REPO / "cpp_bindings" / "README.md", REPO / "benchmarks" / "README.md"]
    return [p for p in pages if p.is_file()]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    options: tuple[str, ...]
    code: str
    expected: str | None  # the ```text block right after it, if any

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}"


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def _fences(text: str) -> list[tuple[int, str, str]]:
    """(line, info string, body) of every top-level fenced block, CommonMark-style nesting."""
    out: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).strip()
        start, body = i, []
        i += 1
        while i < len(lines):
            c = _FENCE.match(lines[i])
            if c and c.group(1)[0] == fence[0] and len(c.group(1)) >= len(fence) and not c.group(2).strip():
                break
            body.append(lines[i])
            i += 1
        out.append((start + 1, info, "\n".join(body) + "\n"))
        i += 1
    return out


def parse_page(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    fences = _fences(text)
    blocks = []
    for k, (line, info, body) in enumerate(fences):
        words = info.split()
        if "exec" not in words:
            continue
        expected = None
        if k + 1 < len(fences):
            nline, ninfo, nbody = fences[k + 1]
            close = line + len(body.splitlines()) + 1  # the closing fence's line number
            between = lines[close : nline - 1]
            if ninfo == "text" and all(not s.strip() for s in between):
                expected = nbody
        options = tuple(w for w in words[1:] if w != "exec")
        blocks.append(Block(page, line, words[0], options, body, expected))
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in doc_pages() for b in parse_page(p)]


# --- the output rule -------------------------------------------------------------------------

_DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|min|h)\b|\b\d+:\d\d:\d\d\b")
_DIGEST = re.compile(r"\b[0-9a-f]{16,}\b")
_TOLERANCE = re.compile(r"(-?\d+(?:\.\d+)?)±(\d+(?:\.\d+)?)")
_NUMBER = r"(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
_WILDCARDS = ("...", "…")


def normalise(text: str, cwd: Path | None = None) -> list[str]:
    if cwd is not None:
        text = text.replace(str(cwd) + os.sep, "").replace(str(cwd), ".")
    lines = [_DIGEST.sub("<digest>", _DURATION.sub("<duration>", s.rstrip())) for s in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_pattern(line: str, tolerances: list[tuple[float, float]]) -> str:
    parts = re.split(r"(\.\.\.|…|-?\d+(?:\.\d+)?±\d+(?:\.\d+)?)", line)
    out = []
    for part in parts:
        if part in _WILDCARDS:
            out.append(r"[^\n]*?")
        elif m := _TOLERANCE.fullmatch(part):
            tolerances.append((float(m.group(1)), float(m.group(2))))
            out.append(_NUMBER)
        else:
            out.append(re.escape(part))
    return "".join(out)


def output_matches(expected: str, actual: str, cwd: Path | None = None) -> bool:
    """The rule above: True when `actual` is what `expected` documents."""
    exp, act = normalise(expected), normalise(actual, cwd)
    tolerances: list[tuple[float, float]] = []
    pattern = "".join(r"(?:[^\n]*\n)*?" if s.strip() in _WILDCARDS else _line_pattern(s, tolerances) + r"\n" for s in exp)
    m = re.fullmatch(pattern, "".join(s + "\n" for s in act))
    if m is None:
        return False
    return all(abs(float(v) - ref) <= tol for v, (ref, tol) in zip(m.groups(), tolerances, strict=True))


# --- running ---------------------------------------------------------------------------------

_WORKDIRS: dict[Path, Path] = {}


@pytest.fixture(scope="session")
def page_workdir(tmp_path_factory: pytest.TempPathFactory):
    def get(page: Path) -> Path:
        if page not in _WORKDIRS:
            _WORKDIRS[page] = tmp_path_factory.mktemp("doc-" + page.stem.lower())
        return _WORKDIRS[page]

    return get


def _skip_reason(block: Block, cwd: Path, request: pytest.FixtureRequest | None = None) -> str | None:
    for opt in block.options:
        if not opt.startswith("requires="):
            continue
        for need in opt.split("=", 1)[1].split(","):
            if need == "cpp":
                if request is not None and HAVE_BUILD_FIXTURE:
                    lib = request.getfixturevalue("build")  # builds, or skips with the reason (no CMake, ...)
                elif (CPP_BUILD / "segment_image").is_file():
                    lib = CPP_BUILD
                else:
                    return f"needs the C/C++ library, which tests/cpp/test_cpp_bindings.py builds in {CPP_BUILD}"
                link = cwd / "build-cpp"
                if not link.exists():
                    link.symlink_to(lib, target_is_directory=True)
            elif importlib.util.find_spec(need) is None:
                return f"needs the Python module '{need}', not installed here"
    return None


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    env["COLUMNS"] = "80"  # rich's width when not on a terminal
    env.pop("FORCE_COLOR", None)
    if block.lang in ("bash", "sh", "shell", "console"):
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        stdin = None
    elif block.lang == "python":
        cmd, stdin = [sys.executable, "-"], block.code
    else:
        raise AssertionError(f"{block.id}: cannot execute a '{block.lang}' block (bash or python)")
    # A hang guard, not a performance bound: exec blocks take seconds.
    return subprocess.run(cmd, cwd=cwd, env=env, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)


BLOCKS = all_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_example(block: Block, page_workdir, request: pytest.FixtureRequest) -> None:
    cwd = page_workdir(block.page)
    if reason := _skip_reason(block, cwd, request):
        pytest.skip(reason)
    proc = run_block(block, cwd)
    assert proc.returncode == 0, f"{block.id} exited {proc.returncode}:\n{proc.stdout}"
    if block.expected is not None and not output_matches(block.expected, proc.stdout, cwd):
        diff = "\n".join(difflib.unified_diff(normalise(block.expected), normalise(proc.stdout, cwd), "documented", "actual", lineterm=""))
        pytest.fail(f"{block.id}: the output differs from the page (after normalisation):\n{diff}")


def test_there_are_examples() -> None:
    """The runner finds the README's quick start: a parser that matched nothing would pass silently."""
    readme = [b for b in BLOCKS if b.page.name == "README.md" and b.page.parent == REPO]
    assert any(b.lang == "python" and b.expected is not None for b in readme)


# --- the rule itself -------------------------------------------------------------------------


def test_rule_tolerates_what_varies() -> None:
    assert output_matches("wrote 5 files to out in 2.5 s\n", "wrote 5 files to out in 31.0 s\n")
    assert output_matches("epoch 1 0:00:09 loss 1.0\n", "epoch 1 0:01:13 loss 1.0\n")
    assert output_matches("sha256 ab12cd34ef56ab12cd34\n", "sha256 0011223344556677889900\n")
    assert output_matches("demo model: .../demo/model\n", "demo model: /usr/lib/python3/demo/model\n")
    assert output_matches("a\n...\nz\n", "a\nb\nc\nz\n")
    assert output_matches("a\n...\nz\n", "a\nz\n")
    assert output_matches("ratio 1.25±0.05\n", "ratio 1.21\n")
    assert output_matches("x   \n\n", "\nx\n", Path("/tmp"))
    assert output_matches("wrote out to .\n", "wrote /tmp/w/out to /tmp/w\n", Path("/tmp/w"))


def test_rule_fails_on_real_drift() -> None:
    assert not output_matches("score 0.590\n", "score 0.591\n")
    assert not output_matches("ratio 1.25±0.05\n", "ratio 1.31\n")
    assert not output_matches("a\nb\n", "a\nb\nc\n")
    assert not output_matches("a\n...\nz\n", "a\nb\ny\n")
    assert not output_matches("wrote 5 files\n", "wrote 6 files\n")
    assert not output_matches("10 slices\n", "12 slices\n")


def test_parser_finds_blocks_and_their_output(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "# t\n\n```bash exec\necho hi\n```\n\n```text\nhi\n```\n\n```python\nnot run\n```\n"
        "````markdown\n```bash exec\nnested, not run\n```\n````\n\n```python exec requires=numpy\nprint(1)\n```\n"
        "prose\n```text\nnot its output: prose in between\n```\n",
        encoding="utf-8",
    )
    blocks = parse_page(page)
    assert [(b.line, b.lang, b.options, b.expected) for b in blocks] == [
        (3, "bash", (), "hi\n"),
        (20, "python", ("requires=numpy",), None),
    ]


# --- links between the pages -----------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(page: Path) -> str:
    """The page without its fenced blocks and inline code."""
    text = page.read_text(encoding="utf-8")
    for _, _, body in sorted(_fences(text), key=lambda f: -len(f[2])):
        text = text.replace(body, "\n")
    return re.sub(r"`[^`\n]*`", "", text)


def broken_links(page: Path) -> list[str]:
    """Relative links of a page whose file does not exist or whose `#anchor` is no heading there."""
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
        if re.match(r"^[a-z]+:", link):
            continue  # http(s), mailto
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
            continue
        if anchor and target.suffix == ".md":
            headings = {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+)$", _prose(target), re.MULTILINE)}
            if anchor not in headings:
                broken.append(f"{link}: no heading '#{anchor}' in {target.name}")
    return broken


@pytest.mark.parametrize("page", doc_pages(), ids=[p.relative_to(REPO).as_posix() for p in doc_pages()])
def test_links_resolve(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Title\n\n## Set up, and run!\n", encoding="utf-8")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#set-up-and-run) [bad anchor](b.md#setup) [missing](c.md) [web](https://x.org)\n"
        "```bash\n# not a heading [in code](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["b.md#setup: no heading '#setup' in b.md", "c.md: no such file"]
