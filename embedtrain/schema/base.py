"""Shared machinery of every YAML config in embedtrain (training recipes, SMAE recipes, eval task files).

* :class:`StrictModel` - unknown keys are errors.
* :class:`LocatedModel` - a top-level config that remembers the file it came from and the line of every key,
  so later errors (a bad data row, a missing model folder) can still point at the right recipe line.
* :func:`load_config_file` - YAML -> validated model, with ``--set`` overrides and *all* validation problems
  reported as one :class:`~embedtrain.errors.RecipeError` naming file, line and field (unknown keys first,
  with a suggestion for typos).
* :func:`check_known_keys` - for free-form sections passed through to another library (``training:``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from embedtrain.errors import LocatedError, RecipeError, suggest
from embedtrain.schema.yaml_loader import LineIndex, line_for, load_yaml_with_lines, parse_yaml


def resolve_relative(path: str | Path, base_dir: Path) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


class StrictModel(BaseModel):
    """Base for all config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LocatedModel(StrictModel):
    """A config read from a YAML file: knows its source file and the line of each key."""

    _source: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)
    #: Locations set on the command line (``--set``), with the argument that set them.
    _overrides: dict[tuple[Any, ...], str] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        """The YAML file this config was read from (None when built in code)."""
        return self._source

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the config are resolved against."""
        return self._source.parent if self._source is not None else Path.cwd()

    def resolve_path(self, path: str | Path) -> Path:
        """Resolve a path from the config (``~`` expanded, relative to the config file)."""
        return resolve_relative(path, self.base_dir)

    def line_of(self, *loc: Any) -> int | None:
        """Line in the config file of the key at ``loc`` (e.g. ``("datasets", 0, "path")``)."""
        return line_for(self._lines, loc) if self._lines else None

    def override_of(self, *loc: Any) -> str | None:
        """The ``--set`` argument that set ``loc`` (or a section above it), if any."""
        return override_for(self._overrides, loc)

    def error(self, message: str, *loc: Any, kind: type[LocatedError] = RecipeError) -> LocatedError:
        """A located error about the value at ``loc``: the recipe line, or the ``--set`` argument that set it."""
        origin = self.override_of(*loc)
        if origin is not None:
            return kind(message, field=f"{format_loc(loc)} (from --set '{origin}')")
        return kind(message, file=self.source, line=self.line_of(*loc), field=format_loc(loc) or None)


M = TypeVar("M", bound=LocatedModel)


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any, str]]:
    """Parse ``key.sub=value`` strings from the command line: ``(dotted key, value read as YAML, original)``."""
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set '{item}' must look like key.subkey=value", field="--set")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(f"--set '{item}': cannot read the value: {problem}", field="--set") from None
        parsed.append((key.strip(), value, item))
    return parsed


def set_dotted(data: dict[str, Any], dotted: str, value: Any, *, origin: str | None = None) -> None:
    """Set ``data["a"]["b"][0]["c"] = value`` for ``dotted == "a.b.0.c"`` (creating mappings as needed).

    A path that does not fit the data (an index into a mapping, a key under a plain value, an index past the
    end of a list) raises one :class:`RecipeError` naming the ``--set`` argument.
    """
    where = f"--set '{origin or dotted + '=...'}'"
    keys = dotted.split(".")
    if any(not k for k in keys):
        raise RecipeError(f"{where}: empty key in '{dotted}'", field="--set")
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        done = ".".join(keys[:depth]) or "the recipe"
        if isinstance(node, list):
            if not key.lstrip("-").isdigit():
                raise RecipeError(f"{where}: '{done}' is a list; use an index (0..{len(node) - 1}), not '{key}'",
                                  field="--set")
            index = int(key)
            if not 0 <= index < len(node):
                raise RecipeError(f"{where}: '{done}' has {len(node)} item(s); index {index} is out of range",
                                  field="--set")
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if child is None:
                    child = node[key] = {}
                node = child
        else:
            raise RecipeError(f"{where}: '{done}' is a single value ({node!r}), so it has no '{key}'",
                              field="--set")


def override_for(overrides: dict[tuple[Any, ...], str], loc: tuple[Any, ...]) -> str | None:
    """The ``--set`` argument that set ``loc`` or one of its parents."""
    loc = tuple(loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in overrides:
            return overrides[loc[:n]]
    return None


def format_loc(loc: tuple[Any, ...]) -> str:
    """``("datasets", 0, "path")`` -> ``datasets[0].path``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """Find a pydantic model class inside ``list[X]`` / ``X | None`` annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields allowed in the section that contains ``loc`` (for typo suggestions)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = _unwrap_model(current.model_fields[part].annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def validation_error(exc: ValidationError, model: type[BaseModel], path: Path | None,
                     lines: dict[tuple[Any, ...], int],
                     overrides: dict[tuple[Any, ...], str] | None = None) -> RecipeError:
    """One :class:`RecipeError` for all problems of ``exc``; unknown keys (likely typos) come first."""
    problems = []
    for err in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'." + suggest(str(loc[-1]), fields_at(model, loc))
        elif err["type"] == "missing":
            message = "required field is missing"
        origin = override_for(overrides or {}, loc)
        if origin is not None:
            problems.append(RecipeError(message, field=f"{format_loc(loc)} (from --set '{origin}')"))
        else:
            problems.append(RecipeError(message, file=path, line=line_for(lines, loc) if lines else None,
                                        field=format_loc(loc)))
    first = problems[0]
    if len(problems) > 1:
        first.args = (str(first) + "".join(f"\n  also: {p}" for p in problems[1:]),)
    return first


def _loc_of(dotted: str) -> tuple[Any, ...]:
    return tuple(int(k) if k.isdigit() else k for k in dotted.split("."))


def read_config_data(path: str | Path, overrides: list[str] | None = None, *, what: str = "a recipe"
                     ) -> tuple[dict[str, Any], LineIndex, dict[tuple[Any, ...], str]]:
    """The YAML mapping at ``path`` with ``--set`` overrides applied, its line index and the overridden locations."""
    path = Path(path)
    data, lines = load_yaml_with_lines(path, what=what.removeprefix("a ").removeprefix("an "))
    if not isinstance(data, dict):
        raise RecipeError(f"{what} must be a YAML mapping (key: value) at the top level", file=path, line=1)
    overridden: dict[tuple[Any, ...], str] = {}
    for key, value, origin in parse_overrides(overrides):
        set_dotted(data, key, value, origin=origin)
        overridden[_loc_of(key)] = origin
    return data, lines, overridden


def validate_config(model: type[M], data: dict[str, Any], path: str | Path | None, lines: LineIndex,
                    overridden: dict[tuple[Any, ...], str] | None = None) -> M:
    """Validate ``data`` as ``model``; every problem becomes one located :class:`RecipeError`."""
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, model, Path(path) if path else None, lines, overridden) from None
    config._source = Path(path).resolve() if path else None
    config._lines = lines
    config._overrides = dict(overridden or {})
    return config


def load_config_file(model: type[M], path: str | Path, overrides: list[str] | None = None, *,
                     what: str = "a recipe") -> M:
    """Read the YAML at ``path``, apply ``--set`` overrides and validate it as ``model``.

    Raises :class:`RecipeError` (file, line, field) for a missing file, bad YAML, a non-mapping top level
    or any validation problem. The returned config knows its source file and key lines.
    """
    data, lines, overridden = read_config_data(path, overrides, what=what)
    return validate_config(model, data, path, lines, overridden)


def check_known_keys(config: LocatedModel, section: str, keys: Iterable[str], allowed: set[str],
                     kind: str) -> None:
    """Reject a key of a pass-through section (``training:``) that the receiving library does not know."""
    for key in keys:
        if key not in allowed:
            raise config.error(f"unknown {kind} '{key}'." + suggest(key, allowed), section, key)
