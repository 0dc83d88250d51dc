"""The documentation site documents every public name (mkdocs.yml, docs/)."""

from __future__ import annotations

import re
from pathlib import Path

import griffe
import pytest

import ief_jobs

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT / "docs" / "reference"
# "::: ief_jobs.IefClient": mkdocstrings renders that object from its docstring
_DIRECTIVE = re.compile(r"^::: (ief_jobs(?:\.\w+)+)\s*$", re.MULTILINE)


def documented() -> set[str]:
    """Every object the API reference pages render, by its dotted path."""
    return {
        match.group(1)
        for page in REFERENCE.glob("*.md")
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8"))
    }


@pytest.fixture(name="package", scope="module")
def _package() -> griffe.Module:
    """The package as mkdocstrings reads it: statically, from src/."""
    return griffe.load("ief_jobs", search_paths=[str(ROOT / "src")])


class TestApiReference:
    def test_every_public_name_has_a_reference_entry(self) -> None:
        """Each name of ief_jobs.__all__ is a ::: ief_jobs.NAME in docs/reference."""
        missing = sorted(
            name for name in ief_jobs.__all__ if f"ief_jobs.{name}" not in documented()
        )
        assert [] == missing

    def test_every_entry_has_a_docstring(self, package: griffe.Module) -> None:
        """Nothing the reference renders is blank: each object has a docstring."""
        blank = sorted(
            path
            for path in documented()
            if not package[path.removeprefix("ief_jobs.")].docstring
        )
        assert [] == blank

    def test_every_entry_exists(self, package: griffe.Module) -> None:
        """The reference names no object the package does not have (a stale page)."""
        stale = []
        for path in documented():
            try:
                package[path.removeprefix("ief_jobs.")]
            except KeyError:
                stale.append(path)
        assert [] == stale
