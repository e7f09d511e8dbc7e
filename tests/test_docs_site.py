"""The front page and the documentation site stay whole: one version, a short README, every page in the
navigation, every relative link resolving. (`mkdocs build --strict` itself runs from scripts/test.sh.)"""

from __future__ import annotations

import re
import unicodedata
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml

import lpselect

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """A heading's anchor as mkdocs' toc makes it (GitHub's agrees for the headings used here)."""
    text = heading.replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", body, re.M)}


def relative_links(page: Path) -> list[str]:
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    body = re.sub(r"`[^`\n]*`", "", body)  # code spans are not links
    return [t for t in LINK.findall(body) if not re.match(r"[a-z]+:", t)]


def pages_with_links() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


def test_the_version_is_stated_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lpselect.__version__"}
    stated = [(p, line) for p in sorted((ROOT / "src").rglob("*.py"))
              for line in p.read_text(encoding="utf-8").splitlines()
              if re.match(r"\s*(__version__|version)\s*=\s*['\"]\d", line)]
    assert [p.relative_to(ROOT).as_posix() for p, _ in stated] == ["src/lpselect/__init__.py"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", lpselect.__version__)
    try:
        installed = version("lpselect")
    except PackageNotFoundError:
        pytest.skip("lpselect is not installed, so there is no metadata to compare")
    assert installed == lpselect.__version__


def test_the_changelog_names_the_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text
    assert f"## [{lpselect.__version__}] - " in text


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"
    text = "\n".join(lines)
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text


def nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    assert [p for p in listed if not (DOCS / p).is_file()] == []
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(listed)


@pytest.mark.parametrize("page", pages_with_links(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == [], f"{page.name}: {broken}"


def test_slug_matches_mkdocs_for_the_method_headings():
    assert slug("§11 Interoperability with the reference's files") == "11-interoperability-with-the-references-files"
    assert slug("`lpselect import-reference` / `export-reference`") == "lpselect-import-reference-export-reference"
