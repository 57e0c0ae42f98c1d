"""User-facing error types.

Every error caused by user input (a recipe, a data file, a checkpoint) is an :class:`EmbedtrainError`
whose message names *where* the problem is (file, line, field) so the CLI can print it without a
traceback. Library code raises these before any expensive work starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class EmbedtrainError(Exception):
    """Base class for errors that are the user's to fix; the CLI prints them without a traceback."""


def _location(file: str | Path | None, line: int | None, field: str | None) -> str:
    parts = []
    if file is not None:
        parts.append(f"{file}:{line}" if line is not None else str(file))
    if field:
        parts.append(f"field '{field}'")
    return ", ".join(parts)


class LocatedError(EmbedtrainError):
    """An error tied to a place in a file: ``file:line, field 'x': message``."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = _location(file, line, field)
        super().__init__(f"{where}: {message}" if where else message)


class RecipeError(LocatedError):
    """The recipe YAML is malformed, has unknown keys, wrong types or points at missing files."""


class DataError(LocatedError):
    """A training/evaluation data file is malformed or lacks a required column."""


class CheckpointError(LocatedError):
    """A model path is missing, or checkpoints are incompatible with each other."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a " Did you mean 'x'?" hint for a misspelled ``name`` (empty string if nothing is close)."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""
