"""Docs a newcomer can trust: every source path and module that the README, docs pages, params comments and
experiment overlays name exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medrepro.source import module_file

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "data" / "README.md", REPO / "params.yaml",
        *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "config").rglob("*.yaml"))]
#: paths of the repository's own files (outputs under results/, data/, models/ are built, not shipped)
SOURCE = re.compile(r"(?<![\w/.-])((?:src|tests|bench|config|docs|workflow)/[\w./-]*\w)")
MODULE = re.compile(r"(?<![\w.])(medrepro(?:\.\w+)+)")


def _named(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        if doc.name == "results.md":  # generated from the result files
            continue
        for m in pattern.finditer(doc.read_text()):
            found.append((doc.relative_to(REPO).as_posix(), m.group(1)))
    return found


@pytest.mark.parametrize("doc, path", _named(SOURCE))
def test_every_named_source_path_exists(doc, path):
    if "<" in path or "*" in path:
        pytest.skip("a pattern, not a path")
    assert (REPO / path).exists() or (REPO / path.rstrip(".")).exists(), f"{doc} names {path}, which does not exist"


@pytest.mark.parametrize("doc, module", _named(MODULE))
def test_every_named_module_exists(doc, module):
    parent, _, name = module.rpartition(".")
    owner = module_file(parent) if parent != "medrepro" else None
    defined = owner is not None and re.search(rf"^(?:def|class) {name}\b|^{name}\s*[:=]", owner.read_text(), re.M)
    # a module, or a name defined in one (medrepro.vap.units.unit_key)
    assert module_file(module) or defined, f"{doc} names {module}, which does not exist"


def test_no_docs_page_repeats_another():
    """Each fact has one home: no paragraph (160 characters or more) or table row of README and the docs pages
    stands on two of them (docs/results.md is generated and left out)."""
    pages = [REPO / "README.md", *(p for p in sorted((REPO / "docs").glob("*.md")) if p.name != "results.md")]
    homes: dict[str, set[str]] = {}
    for page in pages:
        text = page.read_text()
        blocks = [re.sub(r"\s+", " ", b).strip() for b in re.split(r"\n\s*\n", text) if len(b.strip()) >= 160]
        rows = [line for line in text.splitlines() if line.startswith("| `")]
        for block in blocks + rows:
            homes.setdefault(block, set()).add(page.name)
    repeated = {block[:80]: sorted(names) for block, names in homes.items() if len(names) > 1}
    assert not repeated, repeated
