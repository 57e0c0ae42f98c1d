"""Starbucks loss: every pair every step, GradCache equivalence, hard negatives, KL, validation errors."""

from __future__ import annotations

import pytest
import torch

from embedtrain.errors import RecipeError
from embedtrain.losses import LossContext, build_loss
from embedtrain.losses.subnetwork_loss import SubnetworkLoss, similarity_kl
from embedtrain.models.resolve import load_model
from embedtrain.schema import LossConfig

ANCHORS = ["a cat sits on the mat", "the stock market fell", "rain is expected today", "he plays the guitar"]
POSITIVES = ["a kitten rests on a rug", "shares dropped sharply", "showers in the forecast", "he strums a guitar"]
NEGATIVES = ["a dog barks loudly", "the bakery sells bread", "the sun is shining", "she reads a novel"]


pytestmark = pytest.mark.usefixtures("one_thread")


def fresh_model(path):
    torch.manual_seed(0)
    model = load_model(path, device="cpu")
    model.eval()  # no dropout: plain and GradCache runs must see identical embeddings
    return model


def build(model, inner: dict, params: dict | None = None, name: str = "starbucks", fmt: str = "hard_negatives"):
    cfg = LossConfig(name=name, params=params or {}, inner=LossConfig(**inner))
    return build_loss(cfg, model, LossContext(data_format=fmt, field="loss"))


def step(model, loss, columns=(ANCHORS, POSITIVES, NEGATIVES), labels=None):
    model.zero_grad()
    features = [model.preprocess(list(c)) for c in columns]
    value = loss(features, labels)
    value.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(value.detach()), grads


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[parts.index("layer") + 1]) if "layer" in parts else None


def test_every_pair_is_scored_each_step_and_inner_runs_once_per_pair(tiny4):
    model = fresh_model(tiny4)
    loss = build(model, {"name": "mnrl"})
    calls = []
    original = loss.loss.forward
    loss.loss.forward = lambda f, l: calls.append(1) or original(f, l)
    forwards = []
    transformer = model[0]
    transformer.register_forward_hook(lambda *a: forwards.append(1))
    value, grads = step(model, loss)
    pairs = [(1, 1), (1, 3), (2, 5), (3, 11), (3, 21), (4, 32)]  # scaled default for 4 layers / 32 dims
    assert list(loss.last_parts["inner"]) == pairs
    assert len(calls) == len(pairs)
    assert list(loss.last_parts["kl"]) == pairs[:-1]  # no KL for the full model itself
    assert len(forwards) == 3  # one transformer pass per column, not per pair
    assert torch.isfinite(torch.tensor(value))
    touched = {layer_of(n) for n in grads if layer_of(n) is not None and grads[n].abs().sum() > 0}
    assert touched == {0, 1, 2, 3}


def test_cached_inner_loss_gives_same_loss_and_gradients_as_plain(tiny4):
    plain_model = fresh_model(tiny4)
    plain, g_plain = step(plain_model, build(plain_model, {"name": "mnrl"}))
    cached_model = fresh_model(tiny4)
    cached_loss = build(cached_model, {"name": "cached_mnrl", "params": {"mini_batch_size": 2}})
    cached, g_cached = step(cached_model, cached_loss)
    assert cached == pytest.approx(plain, rel=1e-5)
    assert set(g_plain) == set(g_cached)
    for name in g_plain:
        torch.testing.assert_close(g_cached[name], g_plain[name], rtol=1e-4, atol=1e-6)
    assert list(cached_loss.last_parts["inner"]) == [(1, 1), (1, 3), (2, 5), (3, 11), (3, 21), (4, 32)]


def test_cached_gist_inner_loss_trains_every_pair(tiny4):
    model = fresh_model(tiny4)
    loss = build(model, {"name": "cached_gist", "params": {"guide": str(tiny4), "mini_batch_size": 2}},
                 params={"pairs": [[2, 8], [4, 32]]})
    value, grads = step(model, loss)
    assert torch.isfinite(torch.tensor(value))
    assert list(loss.last_parts["inner"]) == [(2, 8), (4, 32)]
    assert any(layer_of(n) == 3 and g.abs().sum() > 0 for n, g in grads.items())


def test_gradients_reach_only_the_layers_a_pair_uses(tiny4):
    model = fresh_model(tiny4)
    loss = build(model, {"name": "cached_mnrl", "params": {"mini_batch_size": 2}},
                 params={"pairs": [[2, 16]], "kl_weight": 0.0})
    _, grads = step(model, loss)
    used = {layer_of(n) for n, g in grads.items() if layer_of(n) is not None and g.abs().sum() > 0}
    assert used == {0, 1}  # layers 3 and 4 are not part of the (2, 16) sub-network


def test_kl_is_zero_when_the_sub_network_is_the_full_model(tiny4):
    model = fresh_model(tiny4)
    emb = [torch.randn(4, 32), torch.randn(4, 32), torch.randn(4, 32)]
    assert float(similarity_kl(emb, emb, 0.05)) == pytest.approx(0.0, abs=1e-6)
    assert float(similarity_kl(emb, [e[:, :8] for e in emb], 0.05)) > 0
    full_only = build(model, {"name": "mnrl"}, params={"pairs": [[4, 32]], "kl_weight": 5.0})
    with_kl, _ = step(model, full_only)
    plain = build(model, {"name": "mnrl"}, name="starbucks", params={"pairs": [[4, 32]], "kl_weight": 0.0})
    without_kl, _ = step(model, plain)
    assert with_kl == pytest.approx(without_kl, rel=1e-6)
    assert full_only.last_parts["kl"] == {}


def test_kl_term_adds_to_the_loss_for_sub_networks(tiny4):
    model = fresh_model(tiny4)
    no_kl = build(model, {"name": "mnrl"}, params={"pairs": [[1, 8], [4, 32]], "kl_weight": 0.0})
    base, _ = step(model, no_kl)
    kl = build(model, {"name": "mnrl"}, params={"pairs": [[1, 8], [4, 32]], "kl_weight": 2.0})
    total, _ = step(model, kl)
    assert total == pytest.approx(base + 2.0 * kl.last_parts["kl"][(1, 8)], rel=1e-5)


def test_scored_pairs_with_cosent(tiny4):
    model = fresh_model(tiny4)
    loss = build(model, {"name": "cosent"}, fmt="scored_pairs")
    value, grads = step(model, loss, columns=(ANCHORS, POSITIVES), labels=torch.tensor([4.0, 3.0, 1.0, 0.5]))
    assert torch.isfinite(torch.tensor(value)) and len(loss.last_parts["inner"]) == 6
    assert any(layer_of(n) == 0 and g.abs().sum() > 0 for n, g in grads.items())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pair_weights_weight_the_inner_losses(tiny4, reduction):
    model = fresh_model(tiny4)
    loss = build(model, {"name": "mnrl"}, params={"pairs": [[1, 8], [4, 32]], "weights": [3.0, 1.0],
                                                  "kl_weight": 0.0, "reduction": reduction})
    value, _ = step(model, loss)
    parts = loss.last_parts["inner"]
    weighted = 3 * parts[(1, 8)] + parts[(4, 32)]  # the paper sums; mean divides by the sum of the weights
    assert value == pytest.approx(weighted if reduction == "sum" else weighted / 4, rel=1e-5)


def test_model_forward_is_restored_after_a_step(tiny4):
    model = fresh_model(tiny4)
    step(model, build(model, {"name": "mnrl"}))
    assert "forward" not in model.__dict__
    emb = model.encode(["hello there"], convert_to_tensor=True)
    assert emb.shape == (1, 32)


@pytest.mark.parametrize(("params", "message"), [
    ({"pairs": [[5, 8]]}, "layer 5 is outside 1..4"),
    ({"pairs": [[2, 64]]}, "dim 64 is outside 1..32"),
    ({"pairs": [[2, 16], [1, 32]]}, "small to large"),
    ({"pairs": [[2, 16], [3, 8]]}, "small to large"),
    ({"pairs": [[2, 16], [2, 16]]}, "listed twice"),
    ({"pairs": [[2]]}, "two integers"),
    ({"pairs": [[2, 16]], "weights": [1.0, 2.0]}, "weights has 2 values for 1 pairs"),
    ({"kl_temperature": 0}, "kl_temperature must be > 0"),
])
def test_bad_parameters_are_recipe_errors(tiny4, params, message):
    model = fresh_model(tiny4)
    with pytest.raises(RecipeError, match=message) as info:
        build(model, {"name": "mnrl"}, params=params)
    assert info.value.field.startswith("loss")


def test_an_empty_pair_list_from_the_picker_is_an_error(tiny4):
    model = fresh_model(tiny4)
    loss = SubnetworkLoss(model, torch.nn.Identity(), lambda: [])
    with pytest.raises(ValueError, match="no sub-network"):
        loss([model.preprocess(["a"])], None)
