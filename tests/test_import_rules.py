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
STAGE_MODULES = ("weights", "profiling", "search", "select", "finetune", "validate", "report")


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


def test_no_stage_module_imports_another():
    bad = []
    for stage in STAGE_MODULES:
        path = ROOT / "orchestrator" / f"{stage}.py"
        for module, line in _imports(path, "orchestrator"):
            name = module.split(".")
            if len(name) >= 2 and name[0] == "orchestrator" and name[1] in STAGE_MODULES and name[1] != stage:
                bad.append(f"orchestrator/{stage}.py:{line} imports {module}")
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
