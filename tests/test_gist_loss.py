"""GIST / cached GIST: which logits the guide masks, multi-negative batches, recipe wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.losses import LossContext, build_loss, check_loss_config
from embedtrain.losses.gist import MultiNegativeGISTEmbedLoss

# Each text is one word-piece; the guide maps it to a 2-D unit vector at this angle (degrees), so
# every guide cosine is cos(angle difference) and the expected masks can be worked out by hand.
ANGLES = {
    "red": 0, "blue": 30,        # row 0: anchor, positive (guide cosine 0.866)
    "green": 90, "black": 100,   # row 1 (0.985)
    "white": 200, "brown": 240,  # row 2 (0.766)
    "pink": 20,                  # hard negative of row 0: cos to red 0.94 > 0.866 -> false negative
    "gray": 10,                  # hard negative of row 1, but cos to red 0.985 -> false negative of row 0
    "gold": 180,                 # hard negative of row 2: cos to white 0.94 > 0.766 -> false negative
    "silver": 150, "orange": 300, "purple": 250,  # second negative column
}
ANCHORS, POSITIVES = ["red", "green", "white"], ["blue", "black", "brown"]
NEG1, NEG2 = ["pink", "gray", "gold"], ["silver", "orange", "purple"]


class AngleGuide(nn.Module):
    """A guide 'model' whose sentence embedding is looked up from the first word-piece."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_seq_length = 512
        self.table = nn.Embedding(tokenizer.vocab_size, 2)
        nn.init.zeros_(self.table.weight)
        for word, deg in ANGLES.items():
            rad = math.radians(deg)
            self.table.weight.data[tokenizer.convert_tokens_to_ids(word)] = torch.tensor([math.cos(rad), math.sin(rad)])

    def forward(self, features):
        features["sentence_embedding"] = self.table(features["input_ids"][:, 1])
        return features


class RecordingCE(nn.Module):
    """Stands in for the loss's ``cross_entropy_loss``: records the logits it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss()
        self.logits: list[torch.Tensor] = []

    def forward(self, logits, labels):
        self.logits.append(logits.detach().clone())
        return self.ce(logits, labels)

    def masked(self) -> np.ndarray:
        logits = torch.cat(self.logits)
        return (torch.isinf(logits) & (logits < 0)).numpy()


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def guide(model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[AngleGuide(model.tokenizer)], device="cpu")


def _features(model, *columns):
    return [model.preprocess(list(col)) for col in columns]


def _run(loss, model, *columns):
    recorder = RecordingCE()
    loss.cross_entropy_loss = recorder  # the seam: every masked logit reaches it as -inf
    value = loss(_features(model, *columns), torch.zeros(len(columns[0])))
    return recorder.masked(), value


def _expected_mask(columns, margin: float = 0.0, strategy: str = "absolute") -> np.ndarray:
    """Independent statement of the GIST rule on the guide's angles (layout: ap | aa | pp | an...)."""
    def cos(a, b):
        return math.cos(math.radians(ANGLES[a] - ANGLES[b]))

    anchors, positives, negatives = columns[0], columns[1], [t for col in columns[2:] for t in col]
    rows = []
    for i, (a, p) in enumerate(zip(anchors, positives)):
        thr = cos(a, p) - (margin if strategy == "absolute" else abs(cos(a, p)) * margin)
        ap = [j != i and cos(a, q) > thr for j, q in enumerate(positives)]
        aa = [cos(a, b) > thr for b in anchors]
        pp = [cos(p, q) > thr for q in positives]
        an = [cos(a, n) > thr for n in negatives]
        rows.append(ap + aa + pp + an)
    return np.array(rows)


def test_gist_masks_exactly_the_false_negatives_on_a_hand_built_batch(model, guide):
    loss = MultiNegativeGISTEmbedLoss(model, guide, temperature=0.05)
    masked, value = _run(loss, model, ANCHORS, POSITIVES, NEG1)
    # Worked out by hand from ANGLES: self-similarities in the anchor-anchor and positive-positive
    # blocks, pink for row 0, gray (row 1's negative) for row 0, gold for row 2. Nothing else.
    expected = np.zeros((3, 12), dtype=bool)
    for i in range(3):
        expected[i, 3 + i] = True   # anchor-anchor diagonal
        expected[i, 6 + i] = True   # positive-positive diagonal
    expected[0, 9] = expected[0, 10] = expected[2, 11] = True
    assert (masked == expected).all(), masked.astype(int)
    assert (masked == _expected_mask([ANCHORS, POSITIVES, NEG1])).all()
    assert torch.isfinite(value)


@pytest.mark.parametrize(("margin", "strategy"), [(0.5, "absolute"), (0.6, "relative"), (0.0, "relative")])
def test_gist_margins_move_the_threshold(model, guide, margin, strategy):
    loss = MultiNegativeGISTEmbedLoss(model, guide, margin=margin, margin_strategy=strategy)
    masked, _ = _run(loss, model, ANCHORS, POSITIVES, NEG1)
    expected = _expected_mask([ANCHORS, POSITIVES, NEG1], margin, strategy)
    assert (masked == expected).all()
    if margin:
        baseline = _expected_mask([ANCHORS, POSITIVES, NEG1])
        assert expected.sum() > baseline.sum()  # a margin masks strictly more here
    # the true positive (diagonal of the anchor-positive block) is never masked
    assert not masked[np.arange(3), np.arange(3)].any()


def test_gist_takes_several_negative_columns_like_cached_gist(model, guide, capsys, caplog):
    from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss

    model.eval()  # no dropout, so both losses see identical embeddings
    cols = (ANCHORS, POSITIVES, NEG1, NEG2)
    masked, value = _run(MultiNegativeGISTEmbedLoss(model, guide), model, *cols)
    captured = capsys.readouterr()
    assert "not indexed by sample" not in caplog.text + captured.err + captured.out  # no spurious warning
    masked_c, value_c = _run(CachedGISTEmbedLoss(model, guide, mini_batch_size=2), model, *cols)
    assert masked.shape == (3, 3 + 3 + 3 + 6)
    assert (masked == _expected_mask(list(cols))).all()
    assert (masked == masked_c).all()
    assert value.item() == pytest.approx(value_c.item(), rel=1e-4)


def test_gist_recipe_factories_resolve_the_guide(tiny_model_dir, tmp_path, model):
    from embedtrain.schema import LossConfig

    ctx = LossContext(base_dir=tiny_model_dir.parent, data_format="hard_negatives")
    loss = build_loss(LossConfig(name="gist", params={"guide": tiny_model_dir.name, "margin": 0.1}), model, ctx)
    assert isinstance(loss, MultiNegativeGISTEmbedLoss)
    assert loss.margin == 0.1 and not any(p.requires_grad for p in loss.guide.parameters())
    cached = build_loss(LossConfig(name="cached_gist", params={"guide": str(tiny_model_dir),
                                                               "mini_batch_size": 4}), model, ctx)
    assert cached.mini_batch_size == 4
    assert cached(_features(model, ANCHORS, POSITIVES, NEG1, NEG2), torch.zeros(3)).item() > 0
    check_loss_config(LossConfig(name="gist", params={"guide": tiny_model_dir.name}), "pairs", ctx)
    with pytest.raises(CheckpointError, match="loss.params.guide"):  # validate finds a missing guide, no model loaded
        check_loss_config(LossConfig(name="gist", params={"guide": "no/such/model"}), "pairs", ctx)
    with pytest.raises(CheckpointError, match="loss.params.guide"):
        build_loss(LossConfig(name="gist", params={"guide": "no/such/model"}), model, ctx)
    with pytest.raises(RecipeError, match="margin_strategy"):
        build_loss(LossConfig(name="gist", params={"guide": str(tiny_model_dir), "margin_strategy": "rel"}),
                   model, ctx)
    with pytest.raises(RecipeError, match="cannot train on 'scored_pairs'"):
        check_loss_config(LossConfig(name="cached_gist", params={"guide": "x"}), "scored_pairs", ctx)


def test_precomputed_guide_embeddings_give_the_same_loss_as_the_live_guide(tiny_model_dir, tmp_path, model):
    from sentence_transformers import SentenceTransformer

    from embedtrain.errors import DataError
    from embedtrain.losses.gist import GuideEmbeddingTable, write_guide_embeddings
    from embedtrain.schema import LossConfig

    guide = SentenceTransformer(str(tiny_model_dir), device="cpu")
    guide.eval()
    model.eval()
    cols = (["A red car.", "Two  dogs"], ["a RED automobile", "two puppies"], ["a blue bike", "one cat"])
    table_file = write_guide_embeddings(guide, [t for col in cols for t in col] + ["unused text"],
                                        tmp_path / "guide.npz")
    live = MultiNegativeGISTEmbedLoss(model, guide, temperature=0.05)
    ctx = LossContext(base_dir=tmp_path, data_format="hard_negatives")
    table = build_loss(LossConfig(name="gist", params={"guide_embeddings": "guide.npz", "temperature": 0.05}),
                       model, ctx)
    assert isinstance(table.guide, GuideEmbeddingTable) and not table.must_retokenize
    feats = _features(model, *cols)
    torch.testing.assert_close(table(feats, None), live(_features(model, *cols), None))
    with pytest.raises(DataError, match="not in the guide embeddings table: 'something else'"):
        table(_features(model, ["something else", "x"], ["y", "z"]), None)
    with pytest.raises(RecipeError, match="either 'guide'"):
        check_loss_config(LossConfig(name="gist", params={"guide": "a", "guide_embeddings": "b"}), "pairs", ctx)
    with pytest.raises(RecipeError, match="guide embeddings file not found"):
        check_loss_config(LossConfig(name="gist", params={"guide_embeddings": "nope.npz"}), "pairs", ctx)
