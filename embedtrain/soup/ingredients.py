"""Soup ingredients: checkpoints loaded side by side and checked for compatibility before any averaging.

Two checkpoints can be averaged only when they are the same function family: same module pipeline
(types, order, folders), same module settings (pooling mode, normalisation, max length...), same
transformer config, same tokenizer vocabulary, same prompts / similarity function, the same parameter
names with the same shapes, and, for task-adapter checkpoints, the same tasks with adapters on the
same layers. The first difference found raises a :class:`~embedtrain.errors.CheckpointError` naming
the checkpoint and what differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from embedtrain.errors import CheckpointError

logger = logging.getLogger(__name__)

#: HF config keys that record provenance, not architecture.
_IGNORED_HF_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}
#: peft config fields that decide how LoRA weights combine (must be plain LoRA for exact averaging).
_UNSUPPORTED_LORA = ("use_dora", "rank_pattern", "alpha_pattern", "lora_bias")


@dataclass
class AdapterWeights:
    """One LoRA adapter of one checkpoint: its peft config and weights (peft key format)."""

    config: Any
    weights: dict[str, torch.Tensor]

    @property
    def scaling(self) -> float:
        r, alpha = self.config.r, self.config.lora_alpha
        return alpha / (r ** 0.5) if self.config.use_rslora else alpha / r


@dataclass
class Ingredient:
    """A loaded checkpoint: the model, its non-LoRA weights and (task models) its adapters."""

    path: Path
    model: Any
    weights: dict[str, torch.Tensor]
    adapters: dict[str, AdapterWeights] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path)


def _lora_key(key: str) -> bool:
    from embedtrain.adapters.module import _LORA_KEY

    return bool(_LORA_KEY.search(key))


def load_ingredient(path: str | Path, *, trust_remote_code: bool = False) -> Ingredient:
    """Load one checkpoint (plain or task-adapter) from a local folder."""
    from embedtrain.adapters.module import task_module
    from embedtrain.models.resolve import load_model

    path = Path(path)
    model = load_model(path, device="cpu", trust_remote_code=trust_remote_code)
    # views of the loaded model's tensors, not copies: ingredient models are only read (soups are built in
    # deep copies), so a clone would only double the memory of every ingredient
    weights = {k: v.detach() for k, v in model.state_dict().items() if not _lora_key(k)}
    adapters = {}
    module = task_module(model)
    if module is not None:
        for name in module.adapter_names():
            config = module.model.peft_config[name]
            for attr in _UNSUPPORTED_LORA:
                if getattr(config, attr, None):
                    raise CheckpointError(f"adapter '{name}' uses {attr}; only plain LoRA adapters can be souped",
                                          file=path / "adapters" / name / "adapter_config.json", field=attr)
            adapters[name] = AdapterWeights(config, {k: v.detach() for k, v in module.adapter_state_dict(name).items()})
    return Ingredient(path, model, weights, adapters)


def _first_difference(a: dict, b: dict) -> str | None:
    for key in sorted(set(a) | set(b), key=str):
        if key not in a:
            return f"'{key}' only in this checkpoint"
        if key not in b:
            return f"'{key}' missing"
        if a[key] != b[key]:
            return f"'{key}': {b[key]!r} here vs {a[key]!r}"
    return None


def _fail(other: Ingredient, ref: Ingredient, what: str, detail: str, file: str | None = None) -> CheckpointError:
    return CheckpointError(f"cannot soup with {ref.name}: {what} differs ({detail})",
                           file=other.path / file if file else other.path, field=what)


def parameter_difference(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> str | None:
    """The first way ``other``'s weights cannot be averaged with ``ref``'s (a parameter only in one, another shape or
    dtype, an integer buffer with other values), said from ``other``'s side; None when they fit."""
    for key in sorted(ref.keys() | other.keys()):
        if key not in other or key not in ref:
            return f"'{key}' {'missing here' if key not in other else 'only here'}"
        x, y = ref[key], other[key]
        if x.shape != y.shape:
            return f"'{key}' has shape {tuple(y.shape)} here vs {tuple(x.shape)}"
        if x.dtype != y.dtype:
            return f"'{key}' has dtype {y.dtype} here vs {x.dtype}"
        if not x.is_floating_point() and not torch.equal(x.cpu(), y.cpu()):
            return f"non-float tensor '{key}' has different values"
    return None


def check_compatible(ref: Ingredient, other: Ingredient) -> None:
    """Raise :class:`CheckpointError` naming ``other`` and the first thing that differs from ``ref``."""
    from embedtrain.adapters.module import task_module
    from embedtrain.models.trust import modules_json

    ref_modules = [(m.get("path"), m.get("type")) for m in modules_json(ref.path)]
    other_modules = [(m.get("path"), m.get("type")) for m in modules_json(other.path)]
    if ref_modules != other_modules:
        idx = next((i for i, (x, y) in enumerate(zip(ref_modules, other_modules)) if x != y),
                   min(len(ref_modules), len(other_modules)))
        mine = other_modules[idx] if idx < len(other_modules) else "nothing"
        theirs = ref_modules[idx] if idx < len(ref_modules) else "nothing"
        raise _fail(other, ref, "modules.json", f"module {idx}: {mine} here vs {theirs}", "modules.json")

    for i, (a, b) in enumerate(zip(ref.model, other.model)):
        if hasattr(a, "get_config_dict"):
            diff = _first_difference(a.get_config_dict(), b.get_config_dict())
            if diff:
                raise _fail(other, ref, f"module {i} ({type(b).__name__}) config", diff)
        hf_a, hf_b = getattr(a, "model", None), getattr(b, "model", None)
        if hasattr(hf_a, "config") and hasattr(hf_b, "config"):
            ca = {k: v for k, v in hf_a.config.to_dict().items() if k not in _IGNORED_HF_KEYS}
            cb = {k: v for k, v in hf_b.config.to_dict().items() if k not in _IGNORED_HF_KEYS}
            diff = _first_difference(ca, cb)
            if diff:
                raise _fail(other, ref, "transformer config", diff, "config.json")
        tok_a, tok_b = getattr(a, "tokenizer", None), getattr(b, "tokenizer", None)
        if tok_a is not None and hasattr(tok_a, "get_vocab"):
            if tok_b is None or tok_a.get_vocab() != tok_b.get_vocab():
                raise _fail(other, ref, "tokenizer", "the vocabularies differ")
            diff = _first_difference(getattr(tok_a, "special_tokens_map", {}), getattr(tok_b, "special_tokens_map", {}))
            if diff:
                raise _fail(other, ref, "tokenizer special tokens", diff)

    model_cfg = lambda m: {"prompts": dict(m.prompts or {}), "default_prompt_name": m.default_prompt_name,  # noqa: E731
                           "similarity_fn_name": m.similarity_fn_name, "truncate_dim": m.truncate_dim}
    diff = _first_difference(model_cfg(ref.model), model_cfg(other.model))
    if diff:
        raise _fail(other, ref, "model config", diff, "config_sentence_transformers.json")

    ta, tb = task_module(ref.model), task_module(other.model)
    if (ta is None) != (tb is None):
        raise _fail(other, ref, "task adapters", "one checkpoint has task adapters, the other has none")
    if ta is not None and tb is not None:
        diff = _first_difference(ta.task_file().model_dump(), tb.task_file().model_dump())
        if diff:
            raise _fail(other, ref, "task table", diff, "task_adapters.json")

    diff = parameter_difference(ref.weights, other.weights)
    if diff:
        raise _fail(other, ref, "parameter", diff)

    for name, adapter in ref.adapters.items():
        mine = other.adapters[name]
        if set(mine.weights) != set(adapter.weights):
            diff = sorted(set(mine.weights) ^ set(adapter.weights))[0]
            raise _fail(other, ref, f"adapter '{name}'", f"adapted layers differ, e.g. '{diff}'",
                        f"adapters/{name}/adapter_config.json")


def load_ingredients(paths: list[str | Path], *, trust_remote_code: bool = False) -> list[Ingredient]:
    """Load every checkpoint and check each against the first."""
    if len(paths) < 2:
        raise CheckpointError("a soup needs at least two checkpoints")
    ingredients: list[Ingredient] = []
    for path in paths:
        ingredient = load_ingredient(path, trust_remote_code=trust_remote_code)
        if ingredients:
            check_compatible(ingredients[0], ingredient)
        ingredients.append(ingredient)
        logger.info("ingredient %d: %s", len(ingredients), path)
    return ingredients
