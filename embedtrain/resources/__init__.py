"""Data files shipped inside the package (see ``README.md`` beside this file)."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """Path of a bundled file or folder, e.g. ``resource_path("eval_tasks")``."""
    return _ROOT.joinpath(*parts)
