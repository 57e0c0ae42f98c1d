"""Command-line options generated from a typed config, so a command's flags and the config never drift apart.

:func:`options_command` turns a pydantic model (``OfflineMiningConfig``...) into a typer command: one
``--kebab-case`` option per field, with the field's default and description, ``--x/--no-x`` for booleans,
and a repeatable ``--column role=name`` for ``dict[str, str]`` fields. The command builds the model from the
options (so pydantic does the validation, and a bad value is one error naming its ``--option``) and hands it
to ``run``.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel, ValidationError

from embedtrain.errors import RecipeError


def _plain_type(annotation: Any) -> Any:
    """The type typer should parse: ``X | None`` -> X, ``Literal[...]`` -> str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _plain_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation


def _choices(annotation: Any) -> list[str] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return [str(c) for c in typing.get_args(candidate)]
    return None


def options_command(model: type[BaseModel], run: Callable[[BaseModel], None], *,
                    flags: dict[str, str] | None = None, bool_flags: dict[str, str] | None = None,
                    list_flags: dict[str, tuple[str, Callable[[list[str]], Any]]] | None = None,
                    doc: str | None = None) -> Callable[..., None]:
    """A typer command function whose options are the fields of ``model``.

    ``flags`` renames options (field -> ``--flag``); ``bool_flags`` gives a boolean its ``--on/--off`` pair;
    ``list_flags`` maps a field to a repeatable option and a parser of its values (``--column a=b``).
    """
    flags, bool_flags, list_flags = flags or {}, bool_flags or {}, list_flags or {}
    parameters = []
    annotations: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        required = info.is_required()
        default = ... if required else info.get_default(call_default_factory=True)
        help_text = info.description or ""
        choices = _choices(info.annotation)
        if choices:
            help_text += f" One of: {', '.join(choices)}."
        if name in list_flags:
            flag, _ = list_flags[name]
            option = typer.Option(None, flag, help=help_text + " (repeatable)")
            annotation: Any = list[str] | None
        elif _plain_type(info.annotation) is bool:
            option = typer.Option(default, bool_flags.get(name, f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"),
                                  help=help_text)
            annotation = bool
        else:
            option = typer.Option(default, flags.get(name, f"--{name.replace('_', '-')}"), help=help_text,
                                  show_default=not required and default is not None)
            annotation = _plain_type(info.annotation) if required else _plain_type(info.annotation) | None
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=annotation))
        annotations[name] = annotation

    def option_name(field: str) -> str:
        if field in list_flags:
            return list_flags[field][0]
        if field in bool_flags:
            return bool_flags[field].split("/")[0]
        return flags.get(field, f"--{field.replace('_', '-')}")

    def command(**values: Any) -> None:
        for name, (_, parse) in list_flags.items():
            values[name] = parse(values.get(name) or [])
        values = {k: v for k, v in values.items() if v is not None or model.model_fields[k].is_required()}
        try:
            config = model(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else None
            raise RecipeError(err["msg"].removeprefix("Value error, "),
                              field=option_name(field) if field in model.model_fields else None) from None
        run(config)

    functools.update_wrapper(command, run)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__wrapped__ = None  # type: ignore[attr-defined]  # typer must read our signature, not run's
    del command.__wrapped__
    if doc is not None:
        command.__doc__ = doc
    return command
