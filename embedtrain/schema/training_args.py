"""Checks of a recipe's ``training:`` section against the trainer's arguments class, before anything runs.

``training:`` is passed through to a Hugging Face arguments dataclass
(``SentenceTransformerTrainingArguments``, or ``transformers.TrainingArguments`` for SMAE). Its keys and
values are checked here so that a typo or a wrong value is one located error at ``embedtrain validate``
time, not a crash after the model has loaded:

* unknown names, with a suggestion for typos;
* each value against the field's declared type (``max_steps: notanint``, ``learning_rate: "abc"``);
* value ranges the dataclass itself does not check (``per_device_train_batch_size: -3``).

Cross-field rules (e.g. ``bf16`` on hardware without it) are the dataclass's own; building the arguments
object (:func:`embedtrain.train.args.build_training_args`) reports them at the ``training`` line.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from embedtrain.errors import RecipeError, suggest
from embedtrain.schema.base import LocatedModel

#: field -> (lowest allowed value, whether the lowest value itself is allowed, extra allowed values).
RANGES: dict[str, tuple[float, bool, tuple[Any, ...]]] = {
    "per_device_train_batch_size": (1, True, ()),
    "per_device_eval_batch_size": (1, True, ()),
    "gradient_accumulation_steps": (1, True, ()),
    "eval_accumulation_steps": (1, True, (None,)),
    "num_train_epochs": (0, False, ()),
    "max_steps": (1, True, (-1,)),
    "learning_rate": (0, True, ()),
    "weight_decay": (0, True, ()),
    "warmup_steps": (0, True, ()),
    "warmup_ratio": (0, True, ()),
    "logging_steps": (0, False, ()),
    "save_steps": (0, False, ()),
    "eval_steps": (0, False, (None,)),
    "save_total_limit": (0, True, (None,)),
    "dataloader_num_workers": (0, True, ()),
    "max_grad_norm": (0, True, ()),
    "adam_epsilon": (0, False, ()),
}


@functools.lru_cache(maxsize=None)
def argument_fields(args_class: type) -> dict[str, Any]:
    """``name -> type`` of the init fields of an arguments dataclass (string annotations resolved)."""
    try:
        hints = typing.get_type_hints(args_class)
    except Exception:  # noqa: BLE001 - fall back to the raw annotations
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(args_class) if f.init}


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any):
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - a type pydantic cannot describe: not checked here
        return None


def _describe(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def check_training_section(recipe: LocatedModel, args_class: type, section: str = "training") -> dict[str, Any]:
    """Check the names and values of ``recipe.<section>``; return the values, coerced to their types.

    Raises :class:`RecipeError` at the recipe line (or ``--set`` argument) of the first bad key.
    """
    from pydantic import ValidationError

    values: dict[str, Any] = getattr(recipe, section)
    fields = argument_fields(args_class)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise recipe.error(f"unknown training argument '{key}'." + suggest(key, fields), section, key)
        adapter = _adapter(fields[key])
        if adapter is not None:
            try:
                value = adapter.validate_python(value)
            except ValidationError:
                raise recipe.error(f"expected {_describe(fields[key])}, got {value!r}", section, key) from None
        _check_range(recipe, section, key, value)
        checked[key] = value
    return checked


def _check_range(recipe: LocatedModel, section: str, key: str, value: Any) -> None:
    if key not in RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, inclusive, extra = RANGES[key]
    if value in extra:
        return
    if value < low or (value == low and not inclusive):
        bound = f">= {low}" if inclusive else f"> {low}"
        also = f" (or {', '.join(repr(e) for e in extra if e is not None)})" if any(e is not None for e in extra) else ""
        raise recipe.error(f"must be {bound}{also}, got {value!r}", section, key)


def training_argument_error(recipe: LocatedModel, exc: Exception, section: str = "training") -> RecipeError:
    """A dataclass's own complaint about the arguments, placed at the key it names (else the section)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    values: dict[str, Any] = getattr(recipe, section)
    named = [key for key in values if key in message]
    loc = (section, named[0]) if named else (section,)
    return recipe.error(f"invalid training arguments: {message}", *loc)
