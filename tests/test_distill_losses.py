"""Distillation losses: each equals a hand computation on a tiny batch with fixed embeddings.

The hand computations are plain Python/numpy loops over the formulas in the loss docstrings, not calls
into the loss code. A lookup-table "model" (one trainable vector per text id) gives fixed embeddings
that still flow through ``model.forward``, so the same batches test gradients and Matryoshka wrapping.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import nn

from embedtrain.losses.embed_ranking import RelativeRankingDistillLoss
from embedtrain.losses.embed_similarity import SimilarityMatrixDistillLoss
from embedtrain.losses.embedding_distill import EmbeddingDistillLoss
from embedtrain.losses.listwise_kl import ListwiseDistillLoss
from embedtrain.losses.margin_mse import MarginMSEDistillLoss
from embedtrain.losses.self_distill import SelfDistillLoss

torch.set_num_threads(1)


class TableModel(nn.Module):
    """A stand-in SentenceTransformer: text id -> a trainable row of a fixed table."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, features):
        return {**features, "sentence_embedding": self.table[features["idx"]]}

    def get_embedding_dimension(self) -> int:
        return self.table.shape[1]

    @property
    def device(self) -> torch.device:
        return self.table.device


def feats(*columns):
    """One feature dict per column of text ids."""
    return [{"idx": torch.tensor(col)} for col in columns]


RNG = np.random.default_rng(0)
TABLE = RNG.normal(size=(12, 4))  # 12 texts, 4 dims
# Rows: (query, positive, negative_1, negative_2) as text ids
Q, P, N1, N2 = [0, 1], [2, 3], [4, 5], [6, 7]
SCORES = np.array([[9.0, -1.5, 3.0], [2.0, 1.0, 0.5]])  # teacher: [t_p, t_n1, t_n2] per row


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- MarginMSE

def hand_margin_mse(table, scores, sim, scale):
    errs = []
    for i in range(2):
        q, p = table[Q[i]], table[P[i]]
        for j, neg in enumerate((N1, N2)):
            student = scale * (sim(q, p) - sim(q, table[neg[i]]))
            errs.append((student - (scores[i, 0] - scores[i, j + 1])) ** 2)
    return float(np.mean(errs))


@pytest.mark.parametrize("similarity,scale", [("dot", 1.0), ("cosine", 5.0)])
def test_margin_mse_matches_hand_computation(similarity, scale):
    model = TableModel(TABLE)
    loss = MarginMSEDistillLoss(model, similarity=similarity, scale=scale)
    value = loss(feats(Q, P, N1, N2), torch.tensor(SCORES, dtype=torch.float32))
    sim = (lambda a, b: float(a @ b)) if similarity == "dot" else cos
    assert value.item() == pytest.approx(hand_margin_mse(TABLE, SCORES, sim, scale), rel=1e-5)
    value.backward()
    assert model.table.grad[Q + P + N1 + N2].abs().sum() > 0  # every text used gets a gradient
    assert model.table.grad[8:].abs().sum() == 0  # unused rows none


def test_margin_mse_accepts_margins_and_rejects_nan():
    model = TableModel(TABLE)
    loss = MarginMSEDistillLoss(model)
    margins = SCORES[:, :1] - SCORES[:, 1:]
    a = loss(feats(Q, P, N1, N2), torch.tensor(SCORES, dtype=torch.float32))
    b = loss(feats(Q, P, N1, N2), torch.tensor(margins, dtype=torch.float32))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        loss(feats(Q, P, N1, N2), torch.tensor([[1.0, float("nan"), 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="similarity"):
        MarginMSEDistillLoss(model, similarity="l2")
    assert loss.get_config_dict() == {"similarity": "dot", "scale": 1.0}
    assert "2010.02666" in loss.citation


# ---------------------------------------------------------------------------------------------- listwise KL

def hand_listwise(table, scores, tau_s, tau_t, objective, infonce_weight, kl_weight=1.0):
    dist = []
    for i in range(2):
        q = table[Q[i]]
        cands = [table[c[i]] for c in (P, N1, N2)]
        student = softmax(np.array([cos(q, c) for c in cands]) / tau_s)
        teacher = softmax(scores[i] / tau_t)
        if objective == "kl":
            dist.append(sum(p * math.log(p / s) for p, s in zip(teacher, student)))
        else:
            dist.append(-sum(p * math.log(s) for p, s in zip(teacher, student)))
    total = kl_weight * float(np.mean(dist))
    if infonce_weight:
        docs = [table[c[i]] for c in (P, N1, N2) for i in range(2)]  # positives first, then each negative column
        nce = []
        for i in range(2):
            logits = np.array([cos(table[Q[i]], d) for d in docs]) / tau_s
            nce.append(-math.log(softmax(logits)[i]))
        total += infonce_weight * float(np.mean(nce))
    return total


@pytest.mark.parametrize("objective,infonce_weight", [("kl", 0.0), ("cross_entropy", 0.0), ("kl", 0.5),
                                                      ("cross_entropy", 1.0)])
def test_listwise_matches_hand_computation(objective, infonce_weight):
    model = TableModel(TABLE)
    loss = ListwiseDistillLoss(model, temperature=0.1, teacher_temperature=2.0, objective=objective,
                               infonce_weight=infonce_weight)
    value = loss(feats(Q, P, N1, N2), torch.tensor(SCORES, dtype=torch.float32))
    expected = hand_listwise(TABLE, SCORES, 0.1, 2.0, objective, infonce_weight)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert model.table.grad[Q + P + N1 + N2].abs().sum() > 0


def test_listwise_kl_and_cross_entropy_have_the_same_gradient():
    grads = []
    for objective in ("kl", "cross_entropy"):
        model = TableModel(TABLE)
        ListwiseDistillLoss(model, objective=objective)(feats(Q, P, N1, N2), torch.tensor(SCORES).float()).backward()
        grads.append(model.table.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_listwise_temperature_rescaling_and_validation():
    model = TableModel(TABLE)
    labels = torch.tensor(SCORES, dtype=torch.float32)
    plain = ListwiseDistillLoss(model, temperature=0.1)(feats(Q, P, N1, N2), labels)
    hinton = ListwiseDistillLoss(model, temperature=0.1, rescale_by_temperature=True)(feats(Q, P, N1, N2), labels)
    assert hinton.item() == pytest.approx(plain.item() * 0.01, rel=1e-5)
    with pytest.raises(ValueError, match="objective"):
        ListwiseDistillLoss(model, objective="mse")
    with pytest.raises(ValueError, match="shape"):  # 2 scores for 3 candidates
        ListwiseDistillLoss(model)(feats(Q, P, N1, N2), labels[:, :2])
    cfg = ListwiseDistillLoss(model, infonce_weight=1.0).get_config_dict()
    assert cfg["infonce_weight"] == 1.0 and cfg["temperature"] == 0.05
    assert "2010.08191" in ListwiseDistillLoss(model).citation


# ---------------------------------------------------------------------------------------------- embedding distillation

TEACHER = RNG.normal(size=(12, 6))  # teacher vectors for the same 12 texts, 6 dims


def hand_sim(s, t):
    s, t = unit(s), unit(t)
    return float(np.mean((s @ s.T - t @ t.T) ** 2))


def hand_rank(s, t, margin):
    s, t = unit(s), unit(t)
    n = len(s)
    pairs = list(itertools.combinations(range(n), 2))
    ss = [s[i] @ s[j] for i, j in pairs]
    ts = [t[i] @ t[j] for i, j in pairs]
    terms = []
    for a, b in itertools.combinations(range(len(pairs)), 2):
        if ts[a] == ts[b]:
            continue
        hi, lo = (a, b) if ts[a] > ts[b] else (b, a)
        terms.append(max(0.0, margin - (ss[hi] - ss[lo])))
    return float(np.mean(terms))


def hand_cos(s, t):
    return float(np.mean([1 - cos(a, b) for a, b in zip(s, t)]))


COLS = (Q, P)  # two text columns, 2 rows -> 4 texts


def student_teacher(table, teacher, cols=COLS):
    order = [i for col in cols for i in col]  # columns flattened: all of column 1, then column 2
    return table[order], teacher[order]


def test_similarity_and_ranking_terms_match_hand_computation():
    model = TableModel(TABLE)
    labels = torch.tensor(np.stack([TEACHER[Q], TEACHER[P]], axis=1), dtype=torch.float32)  # (B, C, D)
    s, t = student_teacher(TABLE, TEACHER)
    sim = SimilarityMatrixDistillLoss(model)(feats(*COLS), labels)
    assert sim.item() == pytest.approx(hand_sim(s, t), rel=1e-5)
    rank = RelativeRankingDistillLoss(model, margin=0.2)(feats(*COLS), labels)
    assert rank.item() == pytest.approx(hand_rank(s, t, 0.2), rel=1e-5)
    assert rank.item() > 0
    rank.backward()
    assert model.table.grad[Q + P].abs().sum() > 0


def test_jasper_combination_with_projection_and_matryoshka_dims():
    model = TableModel(TABLE)
    loss = EmbeddingDistillLoss(model, cosine_weight=10, similarity_weight=200, ranking_weight=20,
                                ranking_margin=0.1, projection_dim=6, matryoshka_dims=[4, 2])
    weight = RNG.normal(size=(6, 4))
    bias = RNG.normal(size=6)
    with torch.no_grad():
        loss.projection.weight.copy_(torch.tensor(weight))
        loss.projection.bias.copy_(torch.tensor(bias))
    labels = torch.tensor(np.stack([TEACHER[Q], TEACHER[P]], axis=1), dtype=torch.float32)
    value = loss(feats(*COLS), labels)
    s, t = student_teacher(TABLE, TEACHER)
    cos_term = np.mean([hand_cos(TABLE[c] @ weight.T + bias, TEACHER[c]) for c in COLS])  # per column, then mean
    geo = np.mean([200 * hand_sim(s[:, :d], t) + 20 * hand_rank(s[:, :d], t, 0.1) for d in (4, 2)])
    assert value.item() == pytest.approx(10 * cos_term + geo, rel=1e-5)
    value.backward()
    assert loss.projection.weight.grad.abs().sum() > 0  # the projection trains too
    assert model.table.grad[Q + P].abs().sum() > 0


def test_teacher_rows_are_looked_up_from_a_store():
    model = TableModel(TABLE)
    loss = EmbeddingDistillLoss(model, cosine_weight=0, teacher_lookup=lambda rows: TEACHER[rows])
    rows = torch.tensor(np.stack([Q, P], axis=1))  # (B, C) integer rows
    vectors = torch.tensor(np.stack([TEACHER[Q], TEACHER[P]], axis=1), dtype=torch.float32)
    assert loss(feats(*COLS), rows).item() == pytest.approx(loss(feats(*COLS), vectors).item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher_lookup"):
        EmbeddingDistillLoss(model, cosine_weight=0)(feats(*COLS), rows)


def test_cosine_term_needs_equal_widths_or_a_projection():
    model = TableModel(TABLE)
    labels = torch.tensor(TEACHER[Q], dtype=torch.float32)  # (B, D) broadcast to both columns
    with pytest.raises(ValueError, match="projection_dim"):
        EmbeddingDistillLoss(model)(feats(*COLS), labels)
    same = torch.tensor(TEACHER[Q][:, :4], dtype=torch.float32)
    value = EmbeddingDistillLoss(model, similarity_weight=0, ranking_weight=0, cosine_weight=1)(feats(*COLS), same)
    expected = np.mean([hand_cos(TABLE[c], TEACHER[Q][:, :4]) for c in COLS])
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_relative_ranking_subsamples_above_max_pairs():
    model = TableModel(TABLE)
    labels = torch.tensor(np.stack([TEACHER[Q], TEACHER[P]], axis=1), dtype=torch.float32)
    torch.manual_seed(0)
    sampled = RelativeRankingDistillLoss(model, margin=0.2, max_ranking_pairs=4000)(feats(*COLS), labels)
    exact = RelativeRankingDistillLoss(model, margin=0.2)(feats(*COLS), labels)
    assert sampled.item() == pytest.approx(exact.item(), abs=0.03)  # 15 pairs of pairs, 4000 draws


# ---------------------------------------------------------------------------------------------- Matryoshka wrapping

def test_st_matryoshka_wraps_score_losses():
    """MatryoshkaLoss runs the inner loss on each normalised prefix; the sum equals per-prefix hand values."""
    model = TableModel(TABLE)
    inner = MarginMSEDistillLoss(model, similarity="dot")
    wrapped = st_losses.MatryoshkaLoss(model, inner, matryoshka_dims=[4, 2])
    value = wrapped(feats(Q, P, N1, N2), torch.tensor(SCORES, dtype=torch.float32))
    dot = lambda a, b: float(a @ b)
    expected = sum(hand_margin_mse(unit(TABLE[:, :d]), SCORES, dot, 1.0) for d in (4, 2))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert model.table.grad.abs().sum() > 0

    model = TableModel(TABLE)
    wrapped = st_losses.MatryoshkaLoss(model, ListwiseDistillLoss(model, temperature=0.1), matryoshka_dims=[4, 2])
    value = wrapped(feats(Q, P, N1, N2), torch.tensor(SCORES, dtype=torch.float32))
    expected = sum(hand_listwise(TABLE[:, :d], SCORES, 0.1, 1.0, "kl", 0.0) for d in (4, 2))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_st_matryoshka_wraps_embedding_distillation():
    """Teacher wider than the student: the student prefixes are compared with the full teacher."""
    model = TableModel(TABLE)
    inner = EmbeddingDistillLoss(model, cosine_weight=1.0, similarity_weight=2.0, ranking_weight=3.0,
                                 ranking_margin=0.1, projection_dim=6)
    wrapped = st_losses.MatryoshkaLoss(model, inner, matryoshka_dims=[4, 2])
    labels = torch.tensor(np.stack([TEACHER[Q], TEACHER[P]], axis=1), dtype=torch.float32)
    value = wrapped(feats(*COLS), labels)
    s, t = student_teacher(TABLE, TEACHER)
    w = inner.projection.weight.detach().numpy().astype(np.float64)
    b = inner.projection.bias.detach().numpy().astype(np.float64)
    cos_full = np.mean([hand_cos(unit(TABLE[c]) @ w.T + b, TEACHER[c]) for c in COLS])  # only at full width
    geo = sum(2 * hand_sim(s[:, :d], t) + 3 * hand_rank(s[:, :d], t, 0.1) for d in (4, 2))
    assert value.item() == pytest.approx(cos_full + geo, rel=1e-5)
    value.backward()
    assert model.table.grad[Q + P].abs().sum() > 0


# ---------------------------------------------------------------------------------------------- self-distillation

def test_self_distillation_adds_the_hand_computed_regulariser():
    model = TableModel(TABLE)
    inner = st_losses.MultipleNegativesRankingLoss(model)
    loss = SelfDistillLoss(model, inner, weight=2.0, cosine_weight=1.0, similarity_weight=3.0)
    labels = None
    # At the start the student is its own teacher: the regulariser is zero.
    assert loss(feats(Q, P), labels).item() == pytest.approx(inner(feats(Q, P), labels).item(), abs=1e-6)
    assert not any(p is model.table for p in loss.__dict__["teacher"].parameters())
    assert sum(1 for _ in loss.parameters()) == 1  # the teacher's weights are not trainable parameters of the loss
    with torch.no_grad():
        model.table.add_(torch.tensor(RNG.normal(scale=0.5, size=TABLE.shape), dtype=torch.float32))
    moved = model.table.detach().numpy().astype(np.float64)
    value = loss(feats(Q, P), labels)
    s, t = student_teacher(moved, TABLE)  # teacher: the start table
    expected = inner(feats(Q, P), labels).item() + 2.0 * (hand_cos(s, t) + 3.0 * hand_sim(s, t))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert model.forward.__func__ is TableModel.forward  # the recording hook is gone


def test_self_distillation_on_a_real_model_trains_the_student_only(tiny_model_dir):
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    loss = SelfDistillLoss(model, st_losses.MultipleNegativesRankingLoss(model), weight=1.0,
                           similarity_weight=1.0, ranking_weight=1.0)
    teacher = loss.__dict__["teacher"]
    before = copy.deepcopy(teacher.state_dict())
    anchors, positives = ["a cat sat", "dogs bark loudly", "the sun is hot"], ["a kitten", "a dog", "warm sun"]
    features = [model.preprocess(anchors), model.preprocess(positives)]
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        optim.zero_grad()
        value = loss(features, None)
        value.backward()
        optim.step()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # after two steps the student moved away from the teacher: the regulariser is now positive
    assert loss(features, None).item() > st_losses.MultipleNegativesRankingLoss(model)(features, None).item()
    with pytest.raises(ValueError, match="GradCache"):
        SelfDistillLoss(model, st_losses.CachedMultipleNegativesRankingLoss(model))


def test_losses_train_a_real_tiny_model(tiny_model_dir):
    """End to end on tokenised features: every loss gives a finite value and a gradient in the encoder."""
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    q, p, n = ["what is a cat", "who wrote hamlet"], ["a cat is a feline", "shakespeare"], ["a car", "a bus"]
    cols = [model.preprocess(x) for x in (q, p, n)]
    scores = torch.tensor([[5.0, -2.0], [4.0, 1.0]])
    teacher = torch.randn(2, 3, 48)
    for loss, labels in [(MarginMSEDistillLoss(model, similarity="cosine", scale=3.0), scores),
                         (ListwiseDistillLoss(model, infonce_weight=1.0), scores),
                         (EmbeddingDistillLoss(model, projection_dim=48, matryoshka_dims=[32, 16]), teacher)]:
        model.zero_grad()
        value = loss(cols, labels)
        assert torch.isfinite(value)
        value.backward()
        grads = [p.grad for p in model[0].parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, type(loss).__name__


def test_self_distillation_refuses_an_inner_loss_that_never_embeds():
    model = TableModel(TABLE)

    class Constant(nn.Module):
        def forward(self, features, labels):
            return torch.ones(())

    with pytest.raises(RuntimeError, match="did not embed"):
        SelfDistillLoss(model, Constant())(feats(Q, P), None)
    assert SelfDistillLoss(model, Constant(), weight=0.0)(feats(Q, P), None).item() == 1.0


def test_matryoshka_prefixes_can_follow_the_students_own_full_vectors():
    model = TableModel(TABLE)
    loss = EmbeddingDistillLoss(model, cosine_weight=0, similarity_weight=200, ranking_weight=20, ranking_margin=0.1,
                                matryoshka_dims=[4, 2], matryoshka_target="student")
    labels = torch.tensor(np.stack([TEACHER[Q], TEACHER[P]], axis=1), dtype=torch.float32)
    value = loss(feats(*COLS), labels)
    s, t = student_teacher(TABLE, TEACHER)
    full = 200 * hand_sim(s, t) + 20 * hand_rank(s, t, 0.1)  # the full width follows the teacher
    prefix = 200 * hand_sim(s[:, :2], s) + 20 * hand_rank(s[:, :2], s, 0.1)  # the prefix follows the student
    assert value.item() == pytest.approx((full + prefix) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="matryoshka_target"):
        EmbeddingDistillLoss(model, matryoshka_target="both")


# ------------------------------------------------------------------- self-distillation without the trained pairs

def hand_untrained_sim(s, t, rows, columns):
    """Mean over (i, j), i != j and not a trained pair (first column row r with another column's row r)."""
    s, t = unit(s), unit(t)
    errs = []
    n = rows * columns
    for i in range(n):
        for j in range(n):
            trained = (i < rows and j >= rows and j % rows == i) or (j < rows and i >= rows and i % rows == j)
            if i != j and not trained:
                errs.append((s[i] @ s[j] - t[i] @ t[j]) ** 2)
    return float(np.mean(errs))


def test_self_distillation_can_leave_the_trained_pairs_out():
    model = TableModel(TABLE)
    inner = st_losses.MultipleNegativesRankingLoss(model)
    loss = SelfDistillLoss(model, inner, weight=2.0, cosine_weight=0.0, similarity_weight=1.0,
                           exclude_trained_pairs=True)
    with torch.no_grad():
        model.table.add_(torch.tensor(RNG.normal(scale=0.5, size=TABLE.shape), dtype=torch.float32))
    moved = model.table.detach().numpy().astype(np.float64)
    cols = (Q, P, N1)
    value = loss(feats(*cols), None)
    ids = [i for col in cols for i in col]
    expected = inner(feats(*cols), None).item() + 2.0 * hand_untrained_sim(moved[ids], TABLE[ids], 2, 3)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # a trained pair's similarity alone changing leaves the regulariser at zero: move q0 towards p0 only
    model2 = TableModel(TABLE)
    mnrl = st_losses.MultipleNegativesRankingLoss(model2)
    loss2 = SelfDistillLoss(model2, mnrl, weight=1.0, cosine_weight=0.0, similarity_weight=1.0,
                            exclude_trained_pairs=True)
    loss_all = SelfDistillLoss(model2, mnrl, weight=1.0, cosine_weight=0.0, similarity_weight=1.0)
    with torch.no_grad():  # two texts only (one pair): the only off-diagonal entries are the trained pair
        model2.table[0] = torch.tensor(TABLE[2] + 0.1, dtype=torch.float32)
    reg = loss2(feats([0], [2]), None) - mnrl(feats([0], [2]), None)
    assert reg.item() == pytest.approx(0.0, abs=1e-7)
    reg_all = loss_all(feats([0], [2]), None) - mnrl(feats([0], [2]), None)
    assert reg_all.item() > 1e-4  # the plain similarity term does penalise the trained pair


def test_self_distillation_teacher_matches_the_students_dropout_mode():
    model = TableModel(TABLE)
    seen = []

    class Recorder(TableModel):
        def forward(self, features):
            seen.append(self.training)
            return super().forward(features)

    teacher = Recorder(TABLE)
    loss = SelfDistillLoss(model, st_losses.MultipleNegativesRankingLoss(model), teacher=teacher, match_dropout=True)
    model.train()
    loss(feats(Q, P), None)
    model.eval()
    loss(feats(Q, P), None)
    assert seen == [True, True, False, False]  # one teacher forward per column, in the student's mode
    assert not teacher.training  # left in eval mode
    seen.clear()
    model.train()
    SelfDistillLoss(model, st_losses.MultipleNegativesRankingLoss(model), teacher=teacher)(feats(Q, P), None)
    assert seen == [False, False]  # default: the teacher embeds in eval mode


def test_self_distillation_teacher_is_not_the_bucketed_student(tiny_model_dir):
    """Length bucketing installs an instance-level forward bound to the student; the frozen copy must not keep it
    (it would silently embed with the student's weights and the regulariser would be ~0)."""
    from embedtrain.train import bucketing

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    assert bucketing.install(model)
    loss = SelfDistillLoss(model, st_losses.MultipleNegativesRankingLoss(model), similarity_weight=1.0)
    teacher = loss.__dict__["teacher"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    features = model.preprocess(["a cat sat on the mat", "dogs bark"])
    with torch.no_grad():
        student = model(dict(features))["sentence_embedding"]
        target = teacher(dict(features))["sentence_embedding"]
    assert (student - target).abs().max() > 1e-3
