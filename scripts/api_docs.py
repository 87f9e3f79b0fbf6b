"""docs/api.md from the code: every public name of `haloc` (its `__all__`) and of `pipelines.api`,
with its signature and the first paragraph of its docstring.

    .venv/bin/python scripts/api_docs.py            # rewrite docs/api.md
    .venv/bin/python scripts/api_docs.py --check    # exit 1 naming what differs or is undocumented

tests/test_docs.py runs --check: a public name without a docstring, or a page that no longer says
what the code says, fails the suite.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"
sys.path.insert(0, str(ROOT))

HEADER = """# API reference

Generated from the code by `scripts/api_docs.py` (a test checks that it is current): every public
name of the core library `haloc` (`haloc.__all__`; no Ray needed) and of `pipelines.api` (the whole
pipeline as a Python call). The first paragraph of each docstring is shown; the code says the rest.
The tutorial is the README, the reference for running the pipelines is [guide.md](guide.md).
"""


def _first_paragraph(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):  # a dataclass's own generated text
        return ""
    return doc.split("\n\n", 1)[0].strip()


def _is_constant(obj) -> bool:
    return isinstance(obj, (str, int, float, tuple, frozenset, dict, set))


def _signature(name: str, obj) -> str:
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        try:
            sig = str(inspect.signature(obj))
            return f"{name}{sig[:-len(' -> None')] if inspect.isclass(obj) and sig.endswith(' -> None') else sig}"
        except (TypeError, ValueError):
            return name
    return name


def public_names() -> list[tuple[str, str, object]]:
    """(module, name, object) of every documented public name, in the page's order."""
    import haloc
    import pipelines.api as api

    out = [("haloc", n, getattr(haloc, n)) for n in sorted(haloc.__all__, key=str.lower)]
    api_names = [n for n in ("compress", "run", "load_report", "Report", "Result") if hasattr(api, n)]
    out += [("pipelines.api", n, getattr(api, n)) for n in api_names]
    return out


def undocumented() -> list[str]:
    return [f"{m}.{n}" for m, n, obj in public_names()
            if not inspect.ismodule(obj) and not _is_constant(obj) and not _first_paragraph(obj)]


def render() -> str:
    parts = [HEADER]
    current = None
    for module, name, obj in public_names():
        if module != current:
            parts.append(f"## `{module}`\n")
            current = module
        if _is_constant(obj):
            shown = sorted(obj) if isinstance(obj, (dict, set, frozenset)) else obj
            text = f"Constant: `{shown!r}`."
        else:
            text = _first_paragraph(obj)
        text = " ".join(text.split())
        parts.append(f"### `{_signature(name, obj)}`\n\n{text}\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare with docs/api.md instead of writing it")
    args = p.parse_args(argv)
    missing = undocumented()
    if missing:
        print(f"api_docs: public names without a docstring: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print("api_docs: docs/api.md is not what the code says; run `.venv/bin/python scripts/api_docs.py`",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)} ({len(public_names())} names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
