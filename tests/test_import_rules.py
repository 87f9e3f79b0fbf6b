"""The layers of the project (docs/design.md): imports point down only, and stages are peers.

    pipelines -> orchestrator -> workers -> hw_profiles -> haloc       (haloc never imports Ray)

Read from the source with `ast` (every import, also those inside functions), so a lazy import that
breaks a rule is caught too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("haloc", "hw_profiles", "workers", "orchestrator", "pipelines")
# what each package may import of ours (itself included)
ALLOWED = {
    "haloc": {"haloc"},
    "hw_profiles": {"haloc", "hw_profiles"},
    "workers": {"haloc", "hw_profiles", "workers"},
    "orchestrator": {"haloc", "hw_profiles", "workers", "orchestrator"},
    "pipelines": set(PACKAGES),
}
# orchestrator/stages/: one module per stage (the report stage has two parts of its own: its page, and the
# figures and words the page and the terminal table share); the infrastructure sits beside the folder
STAGE_MODULES = ("weights", "profiling", "search", "select", "finetune", "validate", "report")
STAGE_OWN = {"report_page": "report", "report_values": "report"}


def _imports(path: Path, package: str) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    here = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1] if node.level > 1 else here
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, node.lineno))
            if node.level and not node.module:  # from . import x
                out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package):
    bad = []
    for path in _files(package):
        for module, line in _imports(path, package):
            top = module.split(".")[0]
            if top in PACKAGES and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if package == "haloc" and top == "ray":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} (haloc is Ray-free)")
    assert not bad, "\n".join(bad)


def test_the_stages_are_one_room():
    """Every module in orchestrator/stages/ is a stage (or a stage's own part), and every stage is there."""
    found = {p.stem for p in (ROOT / "orchestrator" / "stages").glob("*.py")} - {"__init__"}
    assert found == set(STAGE_MODULES) | set(STAGE_OWN)


def test_no_stage_module_imports_another():
    bad = []
    for path in sorted((ROOT / "orchestrator" / "stages").glob("*.py")):
        if path.stem == "__init__":  # the stage table: it calls every stage
            continue
        own = STAGE_OWN.get(path.stem, path.stem)
        for module, line in _imports(path, "orchestrator"):
            name = module.split(".")
            if name[:2] == ["orchestrator", "stages"] and len(name) >= 3 and STAGE_OWN.get(name[2], name[2]) != own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_report_stage_has_no_import_cycle():
    """report -> report_page -> report_values, never back: the page and the values know no stage code."""
    bad = []
    for part, forbidden in (("report_page", ("report",)), ("report_values", ("report", "report_page"))):
        path = ROOT / "orchestrator" / "stages" / f"{part}.py"
        bad += [f"{part}.py:{line} imports {module}" for module, line in _imports(path, "orchestrator")
                if module in {f"orchestrator.stages.{f}" for f in forbidden}]
    assert not bad, "\n".join(bad)


def test_the_infrastructure_does_not_reach_into_the_stages():
    """orchestrator/*.py (store, layout, manifest, cluster, output, ...) serve the stages; only the runner
    calls them, through the stage table."""
    bad = []
    for path in sorted((ROOT / "orchestrator").glob("*.py")):
        if path.stem == "runner":
            continue
        bad += [f"{path.relative_to(ROOT)}:{line} imports {module}" for module, line in _imports(path, "orchestrator")
                if module.startswith("orchestrator.stages")]
    assert not bad, "\n".join(bad)


def test_test_machinery_stays_in_tests():
    """Production code (and the benchmarks) neither import the tests nor carry test hooks."""
    bad = []
    for package in (*PACKAGES, "benchmarks"):
        for path in _files(package):
            text = path.read_text()
            bad += [f"{path.relative_to(ROOT)} imports tests" for m, _ in _imports(path, package) if
                    m.split(".")[0] == "tests"]
            if "write_fake_" in text or "hooks-json" in text:
                bad.append(f"{path.relative_to(ROOT)} carries test machinery")
    assert not bad, "\n".join(bad)
