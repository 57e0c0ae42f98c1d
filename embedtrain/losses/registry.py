"""Name -> loss factory registry used by recipes.

A loss module registers a factory with :func:`register_loss`; the factory receives the model being
trained, a :class:`LossContext` (to resolve paths, load guide models, build an inner loss) and the
recipe's ``params`` as keyword arguments. Unknown parameters and data formats the loss cannot
consume are rejected before training with the recipe line that declared the loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from embedtrain.errors import RecipeError, suggest

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtrain.config.recipe import LossConfig

LossFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its factory, the data formats it accepts and a one-line description."""

    name: str
    factory: LossFactory
    formats: frozenset[str]
    description: str
    wraps_inner: bool = False

    def param_names(self) -> list[str]:
        """Keyword parameters a recipe may set (everything after ``model`` and ``ctx``)."""
        params = list(inspect.signature(self.factory).parameters.values())[2:]
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def accepts_any_param(self) -> bool:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(self.factory).parameters.values())


@dataclass
class LossContext:
    """What a loss factory may use besides the model: where the recipe is, and how to report errors."""

    recipe_file: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    line: int | None = None
    field: str = "loss"
    inner: LossConfig | None = None
    #: Data format of the dataset this loss instance trains on (e.g. "hard_negatives").
    data_format: str | None = None

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def error(self, message: str, sub_field: str | None = None) -> RecipeError:
        name = f"{self.field}.{sub_field}" if sub_field else self.field
        return RecipeError(message, file=self.recipe_file, line=self.line, field=name)

    def build_inner(self, model: SentenceTransformer) -> nn.Module:
        """Build the loss a wrapper loss wraps (the recipe's ``inner``)."""
        if self.inner is None:
            raise self.error("this loss wraps another one: set 'inner: {name: ..., params: ...}'", "inner")
        ctx = LossContext(self.recipe_file, self.base_dir, self.line, f"{self.field}.inner",
                          self.inner.inner, self.data_format)
        return build_loss(self.inner, model, ctx)


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, formats: set[str] | frozenset[str], description: str,
                  wraps_inner: bool = False) -> Callable[[LossFactory], LossFactory]:
    """Decorator: register ``factory(model, ctx, **params)`` under ``name``."""

    def decorator(factory: LossFactory) -> LossFactory:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice")
        LOSSES[name] = LossSpec(name, factory, frozenset(formats), description, wraps_inner)
        return factory

    return decorator


def get_loss_spec(name: str, ctx: LossContext | None = None) -> LossSpec:
    """Look up a loss by name, with a suggestion for misspellings."""
    _ensure_builtin_losses()
    if name not in LOSSES:
        msg = f"unknown loss '{name}'." + suggest(name, LOSSES) + f" Available: {sorted(LOSSES)}"
        raise (ctx.error(msg, "name") if ctx else RecipeError(msg, field="loss.name"))
    return LOSSES[name]


def check_loss_config(config: LossConfig, data_format: str, ctx: LossContext) -> None:
    """Validate name, params and data format compatibility without building anything."""
    spec = get_loss_spec(config.name, ctx)
    if not spec.accepts_any_param():
        allowed = spec.param_names()
        for key in config.params:
            if key not in allowed:
                raise ctx.error(f"unknown parameter '{key}' for loss '{spec.name}'." + suggest(key, allowed)
                                + f" Parameters: {allowed}", f"params.{key}")
    if data_format not in spec.formats:
        raise ctx.error(f"loss '{spec.name}' cannot train on '{data_format}' data; it takes "
                        f"{sorted(spec.formats)}")
    if spec.wraps_inner:
        if config.inner is None:
            raise ctx.error("this loss wraps another one: set 'inner: {name: ..., params: ...}'", "inner")
        inner_ctx = LossContext(ctx.recipe_file, ctx.base_dir, ctx.line, f"{ctx.field}.inner",
                                config.inner.inner, data_format)
        check_loss_config(config.inner, data_format, inner_ctx)
    elif config.inner is not None:
        raise ctx.error(f"loss '{spec.name}' does not wrap another loss; remove 'inner'", "inner")


def build_loss(config: LossConfig, model: SentenceTransformer, ctx: LossContext) -> nn.Module:
    """Instantiate the loss described by ``config`` for ``model``."""
    spec = get_loss_spec(config.name, ctx)
    ctx.inner = config.inner
    try:
        return spec.factory(model, ctx, **config.params)
    except (TypeError, ValueError) as exc:
        raise ctx.error(f"cannot build loss '{spec.name}': {exc}") from None


def _ensure_builtin_losses() -> None:
    """Import the modules that register the built-in losses (idempotent)."""
    import embedtrain.losses.builtin  # noqa: F401


def available_losses() -> dict[str, LossSpec]:
    _ensure_builtin_losses()
    return dict(LOSSES)


def _params_doc(spec: LossSpec) -> dict[str, Any]:
    sig = inspect.signature(spec.factory)
    return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in list(sig.parameters.values())[2:] if p.kind != p.VAR_KEYWORD}
