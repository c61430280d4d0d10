"""Every ```python block of README.md, docs/guide*.md and the method cards
(frostline/policies/<method>/README.md) runs, so the documentation cannot rot.

A block fenced ```python no-run is shown, not run (a placeholder, a multi-process launch). Blocks
run in a fresh namespace, in a temporary working folder; a block that imports a framework the
environment lacks is skipped. The README's plain-torch quickstart stays in the fast tests; the
framework blocks (importing Hugging Face or Lightning alone takes seconds) and the guides' and cards'
blocks (about 20 s together on two CPU cores) are integration tests.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("guide*.md")),
        *sorted((ROOT / "frostline" / "policies").glob("*/README.md"))]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
FRAMEWORKS = {"transformers": "transformers", "lightning": "lightning"}  # import name -> module to require


def python_blocks(path: Path) -> list[tuple[str, str, str]]:
    """``(id, info, code)`` for each python block of ``path``; ``info`` is what follows ``python``."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(1).strip(), match.group(2)))
    return blocks


def _frameworks(code: str) -> list[str]:
    return [name for name in FRAMEWORKS if re.search(rf"^\s*(from|import) {name}\b", code, re.M)]


def _params():
    params = []
    for path in DOCS:
        for block_id, info, code in python_blocks(path):
            if info == "no-run":
                continue
            slow = _frameworks(code) or path.name != "README.md" or path.parent != ROOT
            marks = [pytest.mark.integration] if slow else []
            params.append(pytest.param(code, id=block_id, marks=marks))
    return params


def test_the_docs_have_runnable_blocks_and_only_known_fence_infos():
    readme = python_blocks(ROOT / "README.md")
    assert sum(1 for _, info, _ in readme if info == "") >= 2, "the README's quickstarts (own loop, HF Trainer) run"
    blocks = [b for path in DOCS for b in python_blocks(path)]
    unknown = [(block_id, info) for block_id, info, _ in blocks if info not in ("", "no-run")]
    assert not unknown, f"python fences may only be plain or 'no-run': {unknown}"
    for path in DOCS:  # an indented fence (inside a list item) would be skipped silently
        indented = re.findall(r"^[ \t]+```python", path.read_text(), re.M)
        assert not indented, f"{path.name}: move indented python blocks out of lists so they are run"


def test_the_readme_stays_a_front_door():
    """At most 12,000 characters: guides, tables and the design live in docs/ (a bench's published
    summary that grows it past that is the cue to say it shorter)."""
    size = len((ROOT / "README.md").read_text())
    assert size <= 12_000, f"README.md has {size} characters; move detail into docs/"


@pytest.mark.parametrize("code", _params())
def test_python_block_runs(code, tmp_path, monkeypatch):
    for name in _frameworks(code):
        pytest.importorskip(FRAMEWORKS[name])
    # transformers imports torchvision once a test has put it on the path (tests/outside_models.py),
    # which beside a CPU torch needs the stand-in explained there
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    monkeypatch.chdir(tmp_path)  # blocks may write (runs/..., checkpoints): keep it out of the tree
    exec(compile(code, "<doc block>", "exec"), {"__name__": "__doc_block__"})
