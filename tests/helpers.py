"""Helpers for writing small recipes and data files in tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_recipe(path: Path, recipe: dict | str) -> Path:
    """Write a recipe (a dict dumped as YAML, or raw YAML text) to ``path``."""
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def pair_rows(n: int, offset: int = 0) -> list[dict]:
    """``n`` distinct query/passage pairs on distinct topics."""
    return [{"query": f"what is item {i} made of", "passage": f"item {i} is made of material {i * 7 % 13}"}
            for i in range(offset, offset + n)]


def scored_rows(n: int) -> list[dict]:
    return [{"sentence1": f"a cat number {i} sits", "sentence2": f"a dog number {i} runs", "score": float(i % 6)}
            for i in range(n)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def load_script(path: Path, name: str | None = None):
    """Import a standalone script (``data_prep/*.py``, ``examples/*.py``: not a package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name or Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
