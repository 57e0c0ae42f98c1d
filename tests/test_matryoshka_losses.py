"""``matryoshka`` (dims) and ``matryoshka2d`` (2DMSE) losses, including GradCache inner losses."""

from __future__ import annotations

import random

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

from embedtrain.errors import RecipeError
from embedtrain.losses import LossContext, build_loss
from embedtrain.losses.matryoshka2d import TwoDPicker
from embedtrain.models.resolve import load_model
from embedtrain.schema import LossConfig

ANCHORS = ["a cat sits on the mat", "the stock market fell", "rain is expected today", "he plays the guitar"]
POSITIVES = ["a kitten rests on a rug", "shares dropped sharply", "showers in the forecast", "he strums a guitar"]


pytestmark = pytest.mark.usefixtures("one_thread")


def build(model, name, inner, params=None, fmt="pairs"):
    return build_loss(LossConfig(name=name, params=params or {}, inner=LossConfig(**inner)), model,
                      LossContext(data_format=fmt, field="loss"))


def step(model, loss, columns=(ANCHORS, POSITIVES)):
    model.zero_grad()
    value = loss([model.preprocess(list(c)) for c in columns], None)
    value.backward()
    return float(value.detach()), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def layers_with_grad(grads) -> set[int]:
    out = set()
    for name, g in grads.items():
        parts = name.split(".")
        if "layer" in parts and g.abs().sum() > 0:
            out.add(int(parts[parts.index("layer") + 1]))
    return out


@pytest.mark.parametrize("inner", [{"name": "mnrl"}, {"name": "cached_mnrl", "params": {"mini_batch_size": 2}}])
def test_matryoshka_wraps_sentence_transformers_loss(tiny4, inner):
    model = load_model(tiny4)
    loss = build(model, "matryoshka", inner, {"dims": [32, 16, 8]})
    assert isinstance(loss, MatryoshkaLoss) and loss.matryoshka_dims == (32, 16, 8)
    value, grads = step(model, loss)
    assert torch.isfinite(torch.tensor(value)) and layers_with_grad(grads) == {0, 1, 2, 3}


def test_matryoshka_default_dims_are_scaled_to_the_width(tiny4):
    loss = build(load_model(tiny4), "matryoshka", {"name": "mnrl"})
    assert loss.matryoshka_dims == (32, 21, 11, 5, 3, 1)


@pytest.mark.parametrize(("params", "message"), [
    ({"dims": [64]}, "outside 1..32"),
    ({"dims": [16, 16]}, "twice"),
    ({"dims": [16, 8], "weights": [1.0]}, "weights has 1 values for 2 dims"),
])
def test_matryoshka_bad_params(tiny4, params, message):
    with pytest.raises(RecipeError, match=message):
        build(load_model(tiny4), "matryoshka", {"name": "mnrl"}, params)


def test_2d_picker_draws_from_the_lists_and_always_trains_the_full_model():
    picker = TwoDPicker([1, 2, 4], [8, 16, 32], num_layers=4, dim=32, marginals=True, rng=random.Random(0))
    seen = set()
    for _ in range(50):
        pairs = picker()
        assert pairs[0] == (4, 32)
        layer, dim = pairs[1]
        assert layer in (1, 2) and dim in (8, 16)  # the full size is not drawn as a "sub"-network
        assert set(pairs[2:]) == {(4, dim), (layer, 32)}
        seen.add((layer, dim))
    assert len(seen) == 4  # every combination gets drawn
    no_marginals = TwoDPicker([2], [8], 4, 32, marginals=False)
    assert no_marginals() == [(4, 32), (2, 8)]


@pytest.mark.parametrize("inner", [{"name": "mnrl"}, {"name": "cached_mnrl", "params": {"mini_batch_size": 2}}])
def test_matryoshka2d_trains_full_model_and_one_sampled_sub_network(tiny4, inner):
    model = load_model(tiny4)
    loss = build(model, "matryoshka2d", inner, {"layers": [1], "dims": [8], "kl_weight": 1.0})
    value, grads = step(model, loss)
    assert torch.isfinite(torch.tensor(value))
    assert set(loss.last_parts["inner"]) == {(4, 32), (1, 8), (4, 8), (1, 32)}
    # 2DMSE's KL (sentence-transformers / AnglE): one term per drawn layer, at full width
    assert set(loss.last_parts["kl"]) == {(1, 32)}
    similarity = build(model, "matryoshka2d", inner, {"layers": [1], "dims": [8], "kl": "similarity"})
    step(model, similarity)
    assert set(similarity.last_parts["kl"]) == {(1, 8), (4, 8), (1, 32)}
    assert layers_with_grad(grads) == {0, 1, 2, 3}


def test_matryoshka2d_with_hard_negatives(tiny4):
    model = load_model(tiny4)
    loss = build(model, "matryoshka2d", {"name": "cached_mnrl", "params": {"mini_batch_size": 2}},
                 {"marginals": False}, fmt="hard_negatives")
    negatives = ["a dog barks", "bread is baked", "sunny skies", "she reads"]
    value, _ = step(model, loss, columns=(ANCHORS, POSITIVES, negatives, list(reversed(negatives))))
    assert torch.isfinite(torch.tensor(value)) and len(loss.last_parts["inner"]) == 2


@pytest.mark.parametrize(("params", "message"), [
    ({"layers": [7]}, "outside 1..4"),
    ({"dims": [0]}, "outside 1..32"),
    ({"layers": []}, "empty"),
])
def test_matryoshka2d_bad_params(tiny4, params, message):
    with pytest.raises(RecipeError, match=message) as info:
        build(load_model(tiny4), "matryoshka2d", {"name": "mnrl"}, params)
    assert "params." in info.value.field
