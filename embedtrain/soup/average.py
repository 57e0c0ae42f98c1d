"""Parameter averaging of compatible checkpoints ("model soups").

Full weights are averaged tensor by tensor: ``sum_i w_i * theta_i`` with the weights summing to one.
Non-float tensors (integer buffers) must be equal across ingredients and are kept as they are.

LoRA adapters of the same name are averaged *exactly* in weight space: a LoRA layer adds
``s_i * B_i @ A_i`` to the base weight, and averaging those deltas is not the same as averaging ``A``
and ``B`` separately. Stacking the factors does it exactly::

    A = [A_1; A_2; ...]               (ranks concatenated)
    B = [w_1 s_1 B_1, w_2 s_2 B_2, ...]
    B @ A = sum_i w_i s_i B_i @ A_i   with the new adapter's scaling fixed at 1 (alpha = r = sum r_i)

So the souped adapter has rank ``sum_i r_i``; the task model of the soup equals the average of the
ingredients' effective weights, which is what souping means.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from embedtrain.errors import CheckpointError
from embedtrain.soup.ingredients import AdapterWeights, Ingredient


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Uniform weights when ``weights`` is None; otherwise check and rescale to sum 1."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise CheckpointError(f"got {len(weights)} weights for {n} checkpoints", field="weights")
    if any(w < 0 for w in weights):
        raise CheckpointError(f"weights must not be negative, got {list(weights)}", field="weights")
    total = float(sum(weights))
    if total <= 0:
        raise CheckpointError("weights must not all be zero", field="weights")
    return [float(w) / total for w in weights]


def weighted_state_dict(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i w_i * states[i]`` key by key, computed in float32 and cast back to each tensor's dtype.

    Non-float tensors (integer buffers) are taken from the first state dict: callers check first that they are
    equal everywhere (:func:`embedtrain.soup.ingredients.parameter_difference`). The weights are used as given
    (a soup normalises them first; a merge with the start model passes ``1 - alpha, alpha``).
    """
    out = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            out[key] = first.detach().clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float32, device="cpu")
        for state, w in zip(states, weights):
            acc.add_(state[key].detach().to("cpu", torch.float32), alpha=float(w))
        out[key] = acc.to(first.dtype)
    return out


def average_weights(ingredients: Sequence[Ingredient], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of the (non-LoRA) state dicts; computed in float32 and cast back."""
    return weighted_state_dict([ing.weights for ing in ingredients], weights)


def average_adapter(parts: Sequence[AdapterWeights], weights: Sequence[float]) -> AdapterWeights:
    """The exact weighted average of one adapter across ingredients (see module docstring)."""
    config = copy.deepcopy(parts[0].config)
    rank = sum(p.config.r for p in parts)
    config.r = rank
    config.lora_alpha = rank
    config.use_rslora = False
    merged: dict[str, torch.Tensor] = {}
    for key in parts[0].weights:
        if ".lora_A." in key or ".lora_embedding_A." in key or key.endswith(("lora_embedding_A", "lora_A")):
            merged[key] = torch.cat([p.weights[key] for p in parts], dim=0)
        elif ".lora_B." in key or ".lora_embedding_B." in key or key.endswith(("lora_embedding_B", "lora_B")):
            merged[key] = torch.cat([p.weights[key] * (w * p.scaling) for p, w in zip(parts, weights)], dim=1)
        else:
            raise CheckpointError(f"cannot average adapter tensor '{key}' (only lora_A/lora_B are supported)")
    return AdapterWeights(config, merged)


def build_soup(ingredients: Sequence[Ingredient], weights: Sequence[float], template=None):
    """A model holding the weighted average of ``ingredients``.

    ``template`` is a loaded model of the same kind to fill (reused between greedy-soup candidates);
    by default a deep copy of the first ingredient's model.
    """
    from embedtrain.adapters.module import task_module

    model = template if template is not None else copy.deepcopy(ingredients[0].model)
    state = average_weights(ingredients, weights)
    result = model.load_state_dict(state, strict=False)
    from embedtrain.soup.ingredients import _lora_key

    missing = [k for k in result.missing_keys if not _lora_key(k)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"averaged weights do not fit the model: missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]}")
    module = task_module(model)
    if module is not None:
        for name in ingredients[0].adapters:
            soup = average_adapter([ing.adapters[name] for ing in ingredients], weights)
            replace_adapter(module, name, soup)
    model.eval()
    return model


def replace_adapter(module, name: str, adapter: AdapterWeights) -> None:
    """Swap adapter ``name`` of a task module for ``adapter`` (its rank may differ)."""
    from embedtrain.adapters.module import _UNSET, _add_adapter

    module.model.delete_adapter(name)
    config = copy.deepcopy(adapter.config)
    config.inference_mode = False
    _add_adapter(module.model, config, name)
    module.load_adapter_state_dict(name, adapter.weights)
    module.set_trainable(None)
    module._active = _UNSET
