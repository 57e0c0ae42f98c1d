"""The KL terms of ``matryoshka2d`` and ``starbucks`` follow the papers' reference code by default.

* 2DMSE = sentence-transformers' ``Matryoshka2dLoss`` (AnglE's form): the whole loss value and gradients match.
* Starbucks on STS data: 0.3 * KL over the softmax of the first ``d`` embedding dims, summed over pairs.
* Starbucks on retrieval data: KL of the in-batch dot-product score distributions at T=1, teacher detached.
The references below are computed from independently built sub-network models (``truncated_copy``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedtrain.losses import LossContext, build_loss
from embedtrain.models.resolve import load_model
from embedtrain.models.truncate import truncated_copy
from embedtrain.schema import LossConfig

ANCHORS = ["a cat sits on the mat", "the stock market fell", "rain is expected today", "he plays the guitar"]
POSITIVES = ["a kitten rests on a rug", "shares dropped sharply", "showers in the forecast", "he strums a guitar"]
NEGATIVES = ["a dog barks loudly", "the bakery sells bread", "the sun is shining", "she reads a novel"]

pytestmark = pytest.mark.usefixtures("one_thread")


def fresh(path):
    torch.manual_seed(0)
    model = load_model(path, device="cpu")
    model.eval()
    return model


def build(model, name, inner, params=None, fmt="hard_negatives"):
    return build_loss(LossConfig(name=name, params=params or {}, inner=LossConfig(**inner)), model,
                      LossContext(data_format=fmt, field="loss"))


def features(model, columns):
    return [model.preprocess(list(c)) for c in columns]


def run(model, loss, columns, labels=None):
    model.zero_grad()
    value = loss(features(model, columns), labels)
    value.backward()
    return float(value.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@torch.no_grad()
def sub_embeddings(model, columns, layers, dim):
    sub = truncated_copy(model, layers=layers, dim=dim)
    sub.eval()
    return [sub(f)["sentence_embedding"][..., :dim] for f in features(sub, columns)]


def test_matryoshka2d_default_equals_sentence_transformers_matryoshka2d(tiny_model_dir, monkeypatch):
    from sentence_transformers.sentence_transformer.losses import Matryoshka2dLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.losses import adaptive_layer

    # sentence-transformers draws the prior layer from the hidden states 0..N-1 (0 = the embedding output);
    # make it draw index 1, the output of layer 1, which is our drawn (1, .) sub-network
    monkeypatch.setattr(adaptive_layer.random, "sample", lambda population, k: [1])

    cols = (ANCHORS, POSITIVES)
    ours_model = fresh(tiny_model_dir)  # 2 layers, 32 dims
    ours = build(ours_model, "matryoshka2d", {"name": "mnrl"}, {"layers": [1], "dims": [8]}, fmt="pairs")
    value, grads = run(ours_model, ours, cols)
    st_model = fresh(tiny_model_dir)
    st = Matryoshka2dLoss(st_model, MultipleNegativesRankingLoss(st_model, scale=20.0), [32, 8],
                          n_layers_per_step=1, n_dims_per_step=-1)
    st_value, st_grads = run(st_model, st, cols)
    assert value == pytest.approx(st_value, rel=1e-5)
    assert set(grads) == set(st_grads)
    for name in grads:
        torch.testing.assert_close(grads[name], st_grads[name], rtol=1e-4, atol=1e-6)
    assert set(ours.last_parts["kl"]) == {(1, 32)} and ours.last_parts["kl"][(1, 32)] > 0


def test_starbucks_on_scored_pairs_is_0_3_kl_over_truncated_embeddings_summed_over_pairs(tiny4):
    model = fresh(tiny4)
    pairs = [(1, 8), (2, 16), (4, 32)]
    loss = build(model, "starbucks", {"name": "cosent"}, {"pairs": [list(p) for p in pairs]}, fmt="scored_pairs")
    assert loss.kl == "truncated_embeddings" and loss.kl_weight == pytest.approx(0.3)
    cols, labels = (ANCHORS, POSITIVES), torch.tensor([0.9, 0.1, 0.5, 0.7])
    value, _ = run(model, loss, cols, labels)
    full = torch.cat(sub_embeddings(model, cols, 4, 32))
    for layers, dim in pairs[:-1]:
        sub = torch.cat(sub_embeddings(model, cols, layers, dim))
        expected = F.kl_div(F.log_softmax(sub, dim=-1), F.softmax(full[:, :dim], dim=-1), reduction="batchmean")
        assert loss.last_parts["kl"][(layers, dim)] == pytest.approx(float(expected), rel=1e-3, abs=1e-8)
    assert (4, 32) not in loss.last_parts["kl"]
    parts = loss.last_parts
    assert value == pytest.approx(sum(parts["inner"].values()) + 0.3 * sum(parts["kl"].values()), rel=1e-5)


def test_starbucks_on_retrieval_data_is_a_detached_dot_product_score_kl_at_t1(tiny4):
    model = fresh(tiny4)
    pairs = [(1, 8), (2, 16), (4, 32)]
    loss = build(model, "starbucks", {"name": "mnrl"}, {"pairs": [list(p) for p in pairs]})
    assert loss.kl == "scores" and loss.kl_temperature == 1.0 and loss.kl_weight == 1.0
    cols = (ANCHORS, POSITIVES, NEGATIVES)
    value, _ = run(model, loss, cols)
    t = sub_embeddings(model, cols, 4, 32)
    t_scores = t[0] @ torch.cat(t[1:]).T  # dot products, as Tevatron (no re-normalisation of the cut vectors)
    for layers, dim in pairs[:-1]:
        s = sub_embeddings(model, cols, layers, dim)
        expected = F.kl_div(F.log_softmax(s[0] @ torch.cat(s[1:]).T, dim=1), F.softmax(t_scores, dim=1),
                            reduction="batchmean")
        assert loss.last_parts["kl"][(layers, dim)] == pytest.approx(float(expected), rel=1e-4)
    parts = loss.last_parts
    assert value == pytest.approx(sum(parts["inner"].values()) + sum(parts["kl"].values()), rel=1e-5)


def test_the_full_model_gets_kl_gradient_only_when_the_teacher_is_not_detached(tiny4):
    grads = {}
    for detach in (True, False):
        model = fresh(tiny4)
        # weight 0 on the full model's own loss: layers 2-4 can only learn through the KL teacher
        loss = build(model, "starbucks", {"name": "cosent"}, {"pairs": [[1, 8], [4, 32]], "weights": [1.0, 0.0],
                                                              "kl_detach_teacher": detach}, fmt="scored_pairs")
        _, g = run(model, loss, (ANCHORS, POSITIVES), torch.tensor([0.9, 0.1, 0.5, 0.7]))
        grads[detach] = sum(float(v.abs().sum()) for n, v in g.items() if ".layer.3." in n)
    assert grads[True] == 0.0 and grads[False] > 0.0


@pytest.mark.parametrize("kl", ["layer_embeddings", "truncated_embeddings", "scores", "similarity"])
@pytest.mark.parametrize("detach", [True, False])
def test_every_kl_form_gives_the_same_loss_and_gradients_with_a_gradcache_inner_loss(tiny4, kl, detach):
    params = {"pairs": [[1, 8], [2, 16], [4, 32]], "kl": kl, "kl_detach_teacher": detach}
    plain_model = fresh(tiny4)
    plain, g_plain = run(plain_model, build(plain_model, "starbucks", {"name": "mnrl"}, params),
                         (ANCHORS, POSITIVES, NEGATIVES))
    cached_model = fresh(tiny4)
    cached_loss = build(cached_model, "starbucks", {"name": "cached_mnrl", "params": {"mini_batch_size": 2}}, params)
    cached, g_cached = run(cached_model, cached_loss, (ANCHORS, POSITIVES, NEGATIVES))
    assert cached == pytest.approx(plain, rel=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_cached[name], g_plain[name], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("reduction,expected_scale", [("sum", 1.0), ("mean", 0.5)])
def test_mean_reduction_divides_the_kl_terms_by_their_number(tiny4, reduction, expected_scale):
    model = fresh(tiny4)
    loss = build(model, "starbucks", {"name": "mnrl"}, {"pairs": [[1, 8], [2, 16], [4, 32]], "kl_weight": 2.0,
                                                         "reduction": reduction})
    with_kl, _ = run(model, loss, (ANCHORS, POSITIVES))
    kl_sum = sum(loss.last_parts["kl"].values())
    inner = loss.last_parts["inner"]
    inner_total = sum(inner.values()) / (3 if reduction == "mean" else 1)
    assert with_kl == pytest.approx(inner_total + 2.0 * expected_scale * kl_sum, rel=1e-5)
