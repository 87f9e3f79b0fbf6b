import importlib
import pkgutil
import subprocess
import sys

import haloc


def test_public_names_are_not_shadowed_by_submodules():
    for info in pkgutil.walk_packages(haloc.__path__, "haloc."):
        importlib.import_module(info.name)
    for name in ("decompose", "search", "flops", "params", "decomposable_layers"):
        assert callable(getattr(haloc, name)), name


def test_errors_import_without_torch():
    code = "import sys, haloc.errors; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_never_imports_ray():
    code = ("import sys, importlib, pkgutil, haloc\n"
            "[importlib.import_module(i.name) for i in pkgutil.walk_packages(haloc.__path__, 'haloc.')]\n"
            "assert 'ray' not in sys.modules, 'haloc imported ray'")
    subprocess.run([sys.executable, "-c", code], check=True)
