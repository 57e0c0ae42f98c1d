"""Dynamic re-mining with the loss's own similarities: the same scores and decisions as re-encoding."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml

from embedtrain.mining.dynamic import DynamicMiner, ModelScorer
from embedtrain.mining.reuse import EmbeddingRecorder, row_scores, tap_loss
from embedtrain.mining.table import ROW_LABEL, NegativeTable
from embedtrain.schema.mining import DynamicMiningConfig

ROWS, NEG = 6, 2


def _table(rows: int = ROWS) -> NegativeTable:
    anchors = [f"question number {r} about topic {r % 3}" + " more" * r for r in range(rows)]
    positives = [f"answer {r} on topic {r % 3}" for r in range(rows)]
    ranked = [[f"negative {r}.{j} " + "word " * (j + r % 4) for j in range(NEG * 3)] for r in range(rows)]
    return NegativeTable("toy", anchors, positives, ranked, NEG)


def _features(model, texts):
    return model.preprocess(texts)


def _loss_call(model, loss, table, rows):
    columns = [[table.anchors[r] for r in rows], [table.positive(r) for r in rows],
               *([table.texts[table.current_ids[r, k]] for r in rows] for k in range(NEG))]
    value = loss([_features(model, c) for c in columns], torch.tensor(rows))
    value.backward()
    return value


@pytest.fixture
def model(tiny_model_dir, one_thread):
    from embedtrain.models.resolve import load_model

    m = load_model(tiny_model_dir, device="cpu")
    m.eval()  # dropout off, so the loss's forward and re-encoding see the same network
    return m


def test_row_scores_is_the_mean_anchor_negative_cosine():
    torch.manual_seed(0)
    batch, n = 3, 2
    emb = torch.randn((2 + n) * batch, 5)
    unit = torch.nn.functional.normalize(emb, dim=-1)
    expected = [(unit[i] @ unit[2 * batch + i] + unit[i] @ unit[3 * batch + i]) / 2 for i in range(batch)]
    assert torch.allclose(row_scores(emb, batch, n), torch.stack(expected))


@pytest.mark.parametrize("loss_name", ["mnrl", "cached_mnrl", "gist"])
def test_the_loss_reports_the_scores_re_encoding_gives(model, tiny_model_dir, loss_name):
    from embedtrain.losses.cached_mnrl import CachedMultipleNegativesRankingLoss
    from embedtrain.losses.gist import MultiNegativeGISTEmbedLoss, load_guide
    from embedtrain.losses.mnrl import MultipleNegativesRankingLoss
    from embedtrain.train.bucketing import install
    from embedtrain.train.throughput import sort_rows_by_length

    table = _table()
    if loss_name == "mnrl":
        loss = MultipleNegativesRankingLoss(model)
    elif loss_name == "cached_mnrl":
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=2)
    else:
        from embedtrain.losses.build import LossContext

        guide = load_guide(str(tiny_model_dir), model, LossContext())
        loss = MultiNegativeGISTEmbedLoss(model, guide)
    install(model, overhead_tokens=0)          # with bucketing and (GradCache) length-sorted rows, as in training
    tap = tap_loss(table, model, loss)
    if loss_name == "cached_mnrl":
        sort_rows_by_length(loss)
    rows = [4, 0, 5, 2]
    _loss_call(model, loss, table, rows)
    assert tap.missed == 0 and sorted(table.captured) == sorted(rows)
    reencoded = ModelScorer(model, table)(rows)
    captured = np.array([table.captured[r] for r in rows])
    np.testing.assert_allclose(captured, reencoded, atol=1e-5)


def test_reuse_makes_the_same_easy_decisions_as_re_encoding(model):
    from embedtrain.losses.mnrl import MultipleNegativesRankingLoss

    cfg = DynamicMiningConfig(every_steps=1, easy_ratio=1.0, easy_abs=0.99)  # easy: any drop below 'initial'
    reuse_table, encode_table = _table(), _table()
    for table in (reuse_table, encode_table):
        table.initial[:] = table.current[:] = np.linspace(-0.2, 0.9, ROWS)  # some rows have become "easier"
    reuse = DynamicMiner(reuse_table, cfg, scorer_factory=lambda m: ModelScorer(m, reuse_table))
    encode = DynamicMiner(encode_table, cfg.model_copy(update={"reuse_similarities": False}),
                          scorer_factory=lambda m: ModelScorer(m, encode_table))
    loss = MultipleNegativesRankingLoss(model)
    tap_loss(reuse_table, model, loss)
    rows = [0, 1, 2, 3, 4, 5]
    _loss_call(model, loss, reuse_table, rows)      # training reads and trains on every row
    encode_table.record(rows)                       # what the collator notes for trained batches
    reuse_table.record(rows)
    a, b = reuse.run_round(model, step=1), encode.run_round(model, step=1)
    assert (a.reused, a.encoded, b.reused, b.encoded) == (ROWS, 0, 0, ROWS)
    assert a.calibration == pytest.approx([0.0, 1.0], abs=1e-5) and a.calibration_rows == ROWS
    assert a.mean_current == pytest.approx(b.mean_current, abs=1e-5)
    assert 0 < a.easy < ROWS and (a.easy, a.refreshed) == (b.easy, b.refreshed)
    assert (reuse_table.current_ids == encode_table.current_ids).all()   # the same rows got the same negatives
    assert (reuse_table.cursor == encode_table.cursor).all()
    refreshed = np.flatnonzero(reuse_table.cursor > NEG)
    kept = np.flatnonzero(reuse_table.cursor == NEG)
    np.testing.assert_allclose(reuse_table.current[kept], encode_table.current[kept], atol=1e-5)
    # re-encoding scores the new negatives now; with reuse the next forward pass on those rows does
    assert np.isnan(reuse_table.initial[refreshed]).all() and np.isfinite(encode_table.initial[refreshed]).all()
    _loss_call(model, loss, reuse_table, refreshed.tolist())
    reuse_table.record(refreshed.tolist() + [kept[0]])  # kept[0]: trained, but the loss did not report it
    c = reuse.run_round(model, step=2)
    np.testing.assert_allclose(reuse_table.initial[refreshed], encode_table.initial[refreshed], atol=1e-5)
    assert (c.reused, c.encoded) == (0, 1)             # new negatives take their first score; the rest re-encodes


def test_calibration_maps_training_mode_scores_onto_the_re_encoded_scale(model):
    """Dropout lowers training-mode cosines; the per-round line fit undoes such a shift before deciding."""
    cfg = DynamicMiningConfig(every_steps=1, easy_ratio=1.15, reuse_calibration_rows=8)
    table = _table(rows=12)
    miner = DynamicMiner(table, cfg, scorer_factory=lambda m: ModelScorer(m, table))
    rows = list(range(12))
    true = ModelScorer(model, table)(rows)
    table.initial[:] = true                          # as if mined with this model (initial_from: file)
    table.capture(rows, 0.9 * true - 0.05)           # a systematic training-mode shift: 10-20% lower
    table.record(rows)
    report = miner.run_round(model, step=1)
    assert report.calibration == pytest.approx([0.05 / 0.9, 1 / 0.9], rel=1e-3) and report.calibration_rows == 8
    assert report.easy == 0 and report.encoded == 0
    from embedtrain.mining.dynamic import is_easy

    assert sum(is_easy(0.9 * t - 0.05, t, cfg) for t in true) > 0   # ...which uncorrected would flag rows
    np.testing.assert_allclose(table.current, true, atol=1e-5)


def test_a_loss_that_embeds_differently_falls_back_to_re_encoding(model):
    table = _table()

    class OnlyAnchors(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, features, labels=None):
            assert labels is None  # the row ids never reach the loss
            return self.model(features[0])["sentence_embedding"].sum()

    loss = OnlyAnchors(model)
    tap = tap_loss(table, model, loss)
    _loss_call(model, loss, table, [0, 1])
    assert tap.missed == 1 and table.captured == {}
    assert EmbeddingRecorder.on(model) is tap.recorder          # one recorder per model
    with pytest.raises(ValueError, match="already"):
        tap.install(loss)


def test_training_with_dynamic_mining_takes_scores_from_the_loss(tiny_model_dir, tmp_path, one_thread):
    from embedtrain.api import train
    from embedtrain.schema import load_recipe

    rows = []
    for i in range(12):
        negs = [{"text": f"other text {i} {j}", "score": 0.5} for j in range(2)]
        cands = [{"text": f"candidate {i} {j}", "score": 0.4} for j in range(6)]
        rows.append({"anchor": f"query {i} " + "x " * i, "positive": f"answer {i}", "negatives": negs,
                     "candidates": cands})
    (tmp_path / "hn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"model": {"name_or_path": str(tiny_model_dir)},
              "datasets": [{"name": "hn", "path": "hn.jsonl", "format": "hard_negatives", "num_negatives": 2,
                            "mining": {"dynamic": {"every_steps": 2, "easy_ratio": 1e-6, "easy_abs": 1.5,
                                                   "initial_from": "first_use"}}}],
              "loss": {"name": "mnrl"},
              "training": {"max_steps": 6, "per_device_train_batch_size": 4, "save_steps": 6, "logging_steps": 2},
              "output_dir": str(tmp_path / "out")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = train(load_recipe(tmp_path / "recipe.yaml"))
    with np.load(tmp_path / "out" / f"checkpoint-{result.global_step}" / "dynamic_mining-hn.npz") as data:
        history = json.loads(str(data["meta"]))["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    assert sum(h["encoded"] for h in history) == 0 and sum(h["reused"] for h in history) > 0
    assert sum(h["refreshed"] for h in history) > 0


def test_first_use_needs_reuse():
    with pytest.raises(ValueError, match="first_use"):
        DynamicMiningConfig(initial_from="first_use", reuse_similarities=False)


def test_the_collator_sends_row_ids_to_the_loss_only_for_tapped_tables():
    from embedtrain.mining.table import ROW_COLUMN, ROW_TAG, collate_recording_rows

    tapped, plain = _table(), copy.deepcopy(_table())
    plain.name = "plain"
    tapped.reports_to_loss = True
    collator = collate_recording_rows(lambda features: {"n": len(features)}, [tapped, plain])
    batch = collator([{ROW_COLUMN: f"{ROW_TAG}toy:{r}", "anchor": "a"} for r in (3, 1)])
    assert batch[ROW_LABEL].tolist() == [3, 1]
    assert ROW_LABEL not in collator([{ROW_COLUMN: f"{ROW_TAG}plain:{r}", "anchor": "a"} for r in (0, 2)])
    collator.commit(2)
    assert tapped.take_seen() == [1, 3] and plain.take_seen() == [0, 2]
