"""The docs a user reads: the README stays a tutorial (at most 150 lines), every file it and docs/ name
is in the repository, nothing points outside it, and docs/api.md says what the code says."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("docs", "scripts", "benchmarks", "hw_profiles", "orchestrator", "pipelines", "haloc", "workers", "tests")
# paths that lead out of the checkout (the team's shared notes, the machine's work folder), spelled in
# parts so that this file is not itself one of the pages that name them
OUTSIDE = ("../" + "shared", "/" + "work/")


def test_the_readme_is_a_tutorial_of_at_most_150_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move reference material to docs/guide.md"
    headings = [line for line in lines if line.startswith("## ")]
    for needed in ("Install", "Python", "command line", "report", "Exit codes", "cluster", "Tests"):
        assert any(needed.lower() in h.lower() for h in headings), f"README.md has no section on {needed!r}"
    table = "\n".join(lines)
    for code in (0, 1, 2, 3, 4, 5, 130, 143):  # every exit code the pipelines give
        assert re.search(rf"^\| {code} \|", table, re.M), f"README.md's exit codes lack {code}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_file_a_page_names_is_in_the_repository(page):
    text = page.read_text()
    named = set(re.findall(rf"`((?:{'|'.join(TOP)})/[\w./-]+\.(?:md|py|sh|yaml|json|png|parquet))`", text))
    named |= {m for m in re.findall(r"\]\(([^)#]+)\)", text) if not m.startswith("http")}
    missing = []
    for name in named:
        base = ROOT if name.split("/", 1)[0] in TOP else page.parent
        if "<" in name or "*" in name:
            continue
        if not (base / name).exists():
            missing.append(name)
    assert not missing, f"{page.name} names files that are not in the repository: {sorted(missing)}"
    assert not [p for p in OUTSIDE if p in text], f"{page.name} points outside the repository"


def test_the_api_page_is_what_the_code_says():
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    api_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_docs)
    assert api_docs.undocumented() == [], "public names without a docstring"
    assert (ROOT / "docs" / "api.md").read_text() == api_docs.render(), \
        "docs/api.md is stale: run `.venv/bin/python scripts/api_docs.py`"
    assert "### `compress(" in api_docs.render() and "### `decompose(" in api_docs.render()
