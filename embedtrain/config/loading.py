"""Read a recipe YAML into a validated :class:`~embedtrain.config.recipe.Recipe`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from embedtrain.config.recipe import Recipe
from embedtrain.config.yaml_loader import line_for, load_yaml_with_lines
from embedtrain.errors import RecipeError, suggest


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields allowed at the pydantic model that contains ``loc`` (for suggestions)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            annotation = current.model_fields[part].annotation
            current = _unwrap_model(annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap_model(annotation: Any) -> Any:
    """Find a pydantic model class inside ``list[X]`` / ``X | None`` annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for key in keys[:-1]:
        if isinstance(node, list):
            node = node[int(key)]
            continue
        node = node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings (value read as YAML) from the command line."""
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"override '{item}' must look like key.subkey=value")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw)))
    return parsed


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe; raise :class:`RecipeError` naming file, line and field on any problem.

    ``overrides`` are ``dotted.key=value`` strings applied on top of the file (``training.max_steps=10``).
    """
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping (key: value) at the top level", file=path, line=1)
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _recipe_error(exc, path, lines) from None
    recipe._source = path.resolve()
    recipe._lines = lines
    validate_training_args(recipe)
    if recipe.eval is not None:  # unknown tasks / bad eval data fail now, not after training
        from embedtrain.evaluation.config import check_eval_section

        check_eval_section(recipe)
    return recipe


def _recipe_error(exc: ValidationError, path: Path, lines) -> RecipeError:
    """One :class:`RecipeError` for all validation problems; unknown keys (likely typos) come first."""
    problems = []
    for err in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        loc = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'." + suggest(str(loc[-1]), _fields_at(Recipe, loc))
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append(RecipeError(message, file=path, line=line_for(lines, loc), field=_format_loc(loc)))
    first = problems[0]
    if len(problems) > 1:
        first.args = (str(first) + "".join(f"\n  also: {p}" for p in problems[1:]),)
    return first


def training_arg_names() -> set[str]:
    """Field names accepted by ``SentenceTransformerTrainingArguments``."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    return {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}


def validate_training_args(recipe: Recipe) -> None:
    """Reject unknown keys under ``training:`` with a suggestion, before anything is built."""
    allowed = training_arg_names()
    for key in recipe.training:
        if key not in allowed:
            raise RecipeError(
                f"unknown training argument '{key}'." + suggest(key, allowed),
                file=recipe.source, line=recipe.line_of("training", key), field=f"training.{key}",
            )
