"""Every module imports on its own, first, in a fresh interpreter state (catches import cycles that an
import order in the test suite would hide, e.g. ``embedtrain eval`` failing while its tests pass)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys
import embedtrain
names = sorted(m.name for m in pkgutil.walk_packages(embedtrain.__path__, "embedtrain."))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "embedtrain" or m.startswith("embedtrain.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report every module that fails
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) > 40  # the walk really found the package's modules
