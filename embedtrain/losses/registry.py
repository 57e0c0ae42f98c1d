"""Name -> loss registry used by recipes.

A loss is registered with :func:`register_loss`, normally on a loss *class* in sentence-transformers style
(``cls(model, **params)``). A class that needs more than the model to be built from a recipe (a guide
model to load, an inner loss to build) defines ``from_recipe(cls, model, ctx, **params)``; a class may also
define ``check_recipe(cls, ctx, params)`` for checks that need no model (paths exist, sizes fit the model).
Plain factory functions ``factory(model, ctx, **params)`` can be registered too (handy in tests and plugins).

A recipe's parameters are the keyword parameters of ``from_recipe`` (else ``__init__``) after the model:
unknown names, values of the wrong type (checked against the annotations with pydantic) and data formats the
loss cannot consume are rejected by :func:`embedtrain.losses.build.check_loss_config` before any model is
loaded, naming the recipe line and field. Looking losses up and building them is :mod:`embedtrain.losses.build`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtrain.losses.build import LossContext

#: Data formats of (anchor, positive[, negatives]) contrastive data.
CONTRASTIVE_FORMATS: frozenset[str] = frozenset({"pairs", "triplets", "hard_negatives"})
#: Data formats of sentence pairs with a gold similarity score.
SCORED_FORMATS: frozenset[str] = frozenset({"scored_pairs"})
#: Hard negatives with a teacher's score for the positive and each negative (score distillation).
TEACHER_SCORE_FORMATS: frozenset[str] = frozenset({"scored_negatives"})
#: Formats whose texts embedding distillation can learn from (the teacher store gives the label).
EMBED_DISTILL_FORMATS: frozenset[str] = frozenset({"text"}) | CONTRASTIVE_FORMATS
#: Every training data format (for wrapper losses, which take whatever their inner loss takes).
ANY_FORMAT: frozenset[str] = CONTRASTIVE_FORMATS | SCORED_FORMATS | TEACHER_SCORE_FORMATS | EMBED_DISTILL_FORMATS


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its class (or factory), the data formats it accepts and a one-line description."""

    name: str
    target: Any
    formats: frozenset[str]
    description: str
    wraps_inner: bool = False

    @property
    def is_class(self) -> bool:
        return isinstance(self.target, type)

    def _entry(self) -> tuple[Callable[..., Any], int]:
        """The callable whose keyword parameters a recipe sets, and how many leading parameters to skip."""
        if not self.is_class:
            return self.target, 2  # factory(model, ctx, **params)
        if hasattr(self.target, "from_recipe"):
            return self.target.from_recipe, 2  # bound classmethod: (model, ctx, **params)
        return self.target.__init__, 2  # (self, model, **params)

    def parameters(self) -> list[inspect.Parameter]:
        fn, skip = self._entry()
        params = list(inspect.signature(fn).parameters.values())[skip:]
        return [p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def param_names(self) -> list[str]:
        """Keyword parameters a recipe may set."""
        return [p.name for p in self.parameters()]

    def param_defaults(self) -> dict[str, Any]:
        return {p.name: (None if p.default is inspect.Parameter.empty else p.default) for p in self.parameters()}

    def accepts_any_param(self) -> bool:
        fn, _ = self._entry()
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())

    def type_hints(self) -> dict[str, Any]:
        fn, _ = self._entry()
        try:
            return typing.get_type_hints(fn)
        except Exception:  # noqa: BLE001 - unresolvable annotations: values are then checked at build time
            return {}

    def build(self, model: SentenceTransformer, ctx: LossContext, params: dict[str, Any]) -> nn.Module:
        if not self.is_class:
            return self.target(model, ctx, **params)
        if hasattr(self.target, "from_recipe"):
            return self.target.from_recipe(model, ctx, **params)
        return self.target(model, **params)


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, formats: set[str] | frozenset[str], description: str,
                  wraps_inner: bool = False) -> Callable[[Any], Any]:
    """Decorator: register a loss class (or ``factory(model, ctx, **params)``) under ``name``."""

    def decorator(target: Any) -> Any:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice")
        LOSSES[name] = LossSpec(name, target, frozenset(formats), description, wraps_inner)
        return target

    return decorator


