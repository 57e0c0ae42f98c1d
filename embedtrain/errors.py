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
    """A `` Did you mean 'x'?`` hint for a misspelled ``name`` ('' when nothing is close).

    Case-insensitive. In order: an exact case-insensitive match, a very close spelling (``files`` for
    ``file``), a name that starts with ``name`` (at least four characters: ``banking77`` ->
    ``Banking77Classification``), then a looser spelling match.
    """
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    low = str(name).lower()
    if low in by_lower and by_lower[low] != name:
        return f" Did you mean '{by_lower[low]}'?"
    strong = difflib.get_close_matches(low, list(by_lower), n=1, cutoff=0.8)
    prefixed = sorted(c for c in by_lower if c.startswith(low) and len(low) >= 4 and c != low)[:1]
    close = strong or prefixed or difflib.get_close_matches(low, list(by_lower), n=1, cutoff=0.6)
    return f" Did you mean '{by_lower[close[0]]}'?" if close else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
