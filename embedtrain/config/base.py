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

from embedtrain.config.yaml_loader import line_for, load_yaml_with_lines
from embedtrain.errors import RecipeError, suggest


class StrictModel(BaseModel):
    """Base for all config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LocatedModel(StrictModel):
    """A config read from a YAML file: knows its source file and the line of each key."""

    _source: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

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
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def line_of(self, *loc: Any) -> int | None:
        """Line in the config file of the key at ``loc`` (e.g. ``("datasets", 0, "path")``)."""
        return line_for(self._lines, loc) if self._lines else None


M = TypeVar("M", bound=LocatedModel)


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings (value read as YAML) from the command line."""
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"override '{item}' must look like key.subkey=value")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw)))
    return parsed


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"][0]["c"] = value`` for ``dotted == "a.b.0.c"`` (creating mappings as needed)."""
    keys = dotted.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


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
                     lines: dict[tuple[Any, ...], int]) -> RecipeError:
    """One :class:`RecipeError` for all problems of ``exc``; unknown keys (likely typos) come first."""
    problems = []
    for err in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'." + suggest(str(loc[-1]), fields_at(model, loc))
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append(RecipeError(message, file=path, line=line_for(lines, loc) if lines else None,
                                    field=format_loc(loc)))
    first = problems[0]
    if len(problems) > 1:
        first.args = (str(first) + "".join(f"\n  also: {p}" for p in problems[1:]),)
    return first


def load_config_file(model: type[M], path: str | Path, overrides: list[str] | None = None, *,
                     what: str = "a recipe") -> M:
    """Read the YAML at ``path``, apply ``--set`` overrides and validate it as ``model``.

    Raises :class:`RecipeError` (file, line, field) for a missing file, bad YAML, a non-mapping top level
    or any validation problem. The returned config knows its source file and key lines.
    """
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise RecipeError(f"{what} must be a YAML mapping (key: value) at the top level", file=path, line=1)
    for key, value in parse_overrides(overrides):
        set_dotted(data, key, value)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, model, path, lines) from None
    config._source = path.resolve()
    config._lines = lines
    return config


def check_known_keys(config: LocatedModel, section: str, keys: Iterable[str], allowed: set[str],
                     kind: str) -> None:
    """Reject a key of a pass-through section (``training:``) that the receiving library does not know."""
    for key in keys:
        if key not in allowed:
            raise RecipeError(f"unknown {kind} '{key}'." + suggest(key, allowed), file=config.source,
                              line=config.line_of(section, key), field=f"{section}.{key}")
