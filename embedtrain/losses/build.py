"""Looking up, checking and building the losses a recipe names (the registry itself is :mod:`.registry`).

:func:`check_loss_config` validates a loss section without a model (name, parameter names and types, data
format, the loss's own static checks); :func:`build_loss` instantiates it for a model. :class:`LossContext`
carries what building needs besides the model: where the recipe is (to place errors and resolve paths), the
data format, the model's shape, and the inner loss of a wrapper.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

import embedtrain.losses.builtin  # noqa: F401  (registers the built-in losses)
from embedtrain.errors import RecipeError, suggest
from embedtrain.losses.registry import LOSSES, LossSpec
from embedtrain.schema.base import format_loc, resolve_relative

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtrain.schema import LossConfig
    from embedtrain.schema.base import LocatedModel


@dataclass
class LossContext:
    """What building a loss may use besides the model: where the recipe is, and how to report errors.

    ``recipe`` and ``loc`` (e.g. ``("datasets", 0, "loss")``) place errors at the exact recipe line of a
    parameter; without a recipe, ``recipe_file``/``line``/``field`` are used as given.
    ``model_shape`` is ``(layers, embedding dim)`` of the model being trained when known without loading it.
    """

    recipe_file: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    line: int | None = None
    field: str = "loss"
    inner: LossConfig | None = None
    #: Data format of the dataset this loss instance trains on (e.g. "hard_negatives").
    data_format: str | None = None
    recipe: LocatedModel | None = None
    loc: tuple[Any, ...] = ()
    model_shape: tuple[int, int] | None = None
    #: Whether models the loss loads (a GIST guide) may run code from their folder.
    trust_remote_code: bool = False
    #: Pre-computed teacher embeddings (``embedtrain.distill.TeacherEmbeddings``) of a ``stage: distill`` run;
    #: the embedding-distillation losses look their labels up in it.
    teacher_store: Any = None

    @classmethod
    def for_recipe(cls, recipe: LocatedModel, loc: tuple[Any, ...], data_format: str | None = None,
                   model_shape: tuple[int, int] | None = None) -> LossContext:
        """The context of the loss declared at ``loc`` of ``recipe``."""
        model = getattr(recipe, "model", None)
        return cls(recipe_file=recipe.source, base_dir=recipe.base_dir, line=recipe.line_of(*loc),
                   field=format_loc(loc), data_format=data_format, recipe=recipe, loc=tuple(loc),
                   model_shape=model_shape, trust_remote_code=bool(getattr(model, "trust_remote_code", False)))

    def resolve_path(self, path: str | Path) -> Path:
        return resolve_relative(path, self.base_dir)

    def error(self, message: str, sub_field: str | None = None) -> RecipeError:
        """A :class:`RecipeError` about this loss (``sub_field`` like ``"params.dims"``)."""
        if self.recipe is not None:
            sub = tuple(int(p) if p.isdigit() else p for p in sub_field.split(".")) if sub_field else ()
            return self.recipe.error(message, *self.loc, *sub)
        name = f"{self.field}.{sub_field}" if sub_field else self.field
        return RecipeError(message, file=self.recipe_file, line=self.line, field=name)

    def nested(self, config: LossConfig | None) -> LossContext:
        """The context of the ``inner`` loss of a wrapper loss."""
        return dataclasses.replace(self, field=f"{self.field}.inner",
                                   inner=config.inner if config is not None else None,
                                   loc=(*self.loc, "inner") if self.loc else ())

    def build_inner(self, model: SentenceTransformer) -> nn.Module:
        """Build the loss a wrapper loss wraps (the recipe's ``inner``)."""
        if self.inner is None:
            raise self.error("this loss wraps another one: set 'inner: {name: ..., params: ...}'", "inner")
        return build_loss(self.inner, model, self.nested(self.inner))


def get_loss_spec(name: str, ctx: LossContext | None = None) -> LossSpec:
    """Look up a loss by name, with a suggestion for misspellings."""
    if name not in LOSSES:
        msg = f"unknown loss '{name}'." + suggest(name, LOSSES) + f" Available: {sorted(LOSSES)}"
        raise (ctx.error(msg, "name") if ctx else RecipeError(msg, field="loss.name"))
    return LOSSES[name]


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any):
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - a type pydantic cannot describe: checked at build time instead
        return None


def _check_param_types(spec: LossSpec, params: dict[str, Any], ctx: LossContext) -> None:
    from pydantic import ValidationError

    hints = spec.type_hints()
    for key, value in params.items():
        adapter = _adapter(hints[key]) if key in hints else None
        if adapter is None:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            expected = str(hints[key]).replace("typing.", "").replace("NoneType", "None")
            detail = exc.errors()[0]["msg"]
            raise ctx.error(f"expected {expected}, got {value!r} ({detail})", f"params.{key}") from None


def check_loss_config(config: LossConfig, data_format: str, ctx: LossContext) -> None:
    """Validate name, parameter names and types, data format and static rules without building anything."""
    spec = get_loss_spec(config.name, ctx)
    if not spec.accepts_any_param():
        allowed = spec.param_names()
        for key in config.params:
            if key not in allowed:
                raise ctx.error(f"unknown parameter '{key}' for loss '{spec.name}'." + suggest(key, allowed)
                                + f" Parameters: {allowed}", f"params.{key}")
    _check_param_types(spec, config.params, ctx)
    if data_format not in spec.formats:
        raise ctx.error(f"loss '{spec.name}' cannot train on '{data_format}' data; it takes "
                        f"{sorted(spec.formats)}")
    if spec.wraps_inner:
        if config.inner is None:
            raise ctx.error("this loss wraps another one: set 'inner: {name: ..., params: ...}'", "inner")
        check_loss_config(config.inner, data_format, ctx.nested(config.inner))
    elif config.inner is not None:
        raise ctx.error(f"loss '{spec.name}' does not wrap another loss; remove 'inner'", "inner")
    check = getattr(spec.target, "check_recipe", None) if spec.is_class else None
    if check is not None:
        check(ctx, dict(config.params))


def build_loss(config: LossConfig, model: SentenceTransformer, ctx: LossContext) -> nn.Module:
    """Instantiate the loss described by ``config`` for ``model``."""
    spec = get_loss_spec(config.name, ctx)
    ctx.inner = config.inner
    try:
        return spec.build(model, ctx, dict(config.params))
    except (TypeError, ValueError) as exc:
        raise ctx.error(f"cannot build loss '{spec.name}': {exc}") from None


def available_losses() -> dict[str, LossSpec]:
    return dict(LOSSES)
