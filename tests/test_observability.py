"""Seeing a run: TensorBoard events, the curves PNG and run record beside the final model, the GIST masked share
and dynamic-mining rounds in the logs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import pair_rows, scored_rows, write_recipe, write_rows

from embedtrain.api import train
from embedtrain.schema import load_recipe


def _recipe(tmp_path, model_dir, **extra):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(24))
    write_rows(tmp_path / "dev.jsonl", scored_rows(20))
    recipe = {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "mnrl"},
        "evaluators": [{"name": "dev", "path": "dev.jsonl"}],
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 2, "save_steps": 2, "logging_steps": 1,
                     "eval_strategy": "steps", "eval_steps": 2, "learning_rate": 1e-3},
        "output_dir": str(tmp_path / "out"),
        "seed": 1,
    }
    for key, value in extra.items():
        if key == "training":
            recipe["training"].update(value)
        else:
            recipe[key] = value
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe))


def test_event_file_curves_png_and_run_record_after_a_tiny_run(tmp_path, tiny_model_dir):
    result = train(_recipe(tmp_path, tiny_model_dir))
    events = list((result.output_dir / "runs").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard logging is on by default"
    png = result.final_dir / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    assert record["curves"] == "training_curves.png" and record["global_step"] == 6
    assert record["max_seq_length"] == {"training": 64, "saved": 64}
    [ds] = record["datasets"]
    assert ds["file"] == "pairs.jsonl" and ds["rows"] == 24 and len(ds["sha256"]) == 64 and ds["loss"] == "mnrl"
    evals = [e for e in record["log_history"] if "eval_dev_spearman_cosine" in e]
    assert [e["step"] for e in evals] == [2, 4, 6]  # every eval_steps
    assert record["evaluators"]["main_metrics"] == {"dev": "dev_spearman_cosine"}
    assert record["evaluators"]["after"]["dev"] == pytest.approx(100 * evals[-1]["eval_dev_spearman_cosine"])
    assert str(tmp_path) not in (result.final_dir / "embedtrain_run.json").read_text()

    # the evaluator scores reached TensorBoard too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"train/loss", "train/learning_rate", "eval/dev_spearman_cosine"} <= set(acc.Tags()["scalars"])


def test_report_to_none_in_the_recipe_wins(tmp_path, tiny_model_dir):
    result = train(_recipe(tmp_path, tiny_model_dir, training={"report_to": "none", "num_train_epochs": 1}))
    assert not (result.output_dir / "runs").exists()
    assert (result.final_dir / "training_curves.png").exists()  # the PNG does not depend on TensorBoard


def test_load_best_model_at_end_on_an_evaluator_metric(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, training={
        "load_best_model_at_end": True, "metric_for_best_model": "dev_spearman_cosine", "save_total_limit": None})
    result = train(recipe)
    state = json.loads((result.output_dir / "checkpoint-6" / "trainer_state.json").read_text())
    scores = {e["step"]: e["eval_dev_spearman_cosine"] for e in state["log_history"]
              if "eval_dev_spearman_cosine" in e}
    best_step = max(scores, key=scores.get)
    assert state["best_metric"] == pytest.approx(scores[best_step])
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    # the final model is the best checkpoint: its evaluator score is the best one
    assert result.scores_after["dev"] == pytest.approx(100 * scores[best_step], abs=1e-4)


def test_metric_for_best_model_is_checked_at_validate_time(tmp_path, tiny_model_dir):
    from embedtrain.api import validate
    from embedtrain.errors import RecipeError

    _recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError, match=r"training\.metric_for_best_model.*dev_spearman_cosine"):
        validate(tmp_path / "recipe.yaml", ["training.metric_for_best_model=dev_spearman"])
    validate(tmp_path / "recipe.yaml", ["training.metric_for_best_model=eval_dev_pearson_cosine"])


# -------------------------------------------------------------------------------------------------------
# GIST: the share of masked in-batch candidates
# -------------------------------------------------------------------------------------------------------
def _expected_share(guide, anchors, positives, negatives, margin: float) -> float:
    """Masked share counted independently from the guide's embeddings (GIST's absolute-margin rule)."""
    def emb(texts):
        return torch.nn.functional.normalize(guide.encode(texts, convert_to_tensor=True), dim=-1)

    a, p = emb(anchors), emb(positives)
    n = emb(negatives) if negatives else None
    masked = total = 0
    for i in range(len(anchors)):
        thr = float(a[i] @ p[i]) - margin
        cands = [float(a[i] @ p[j]) for j in range(len(positives)) if j != i]       # other positives
        cands += [float(a[i] @ a[j]) for j in range(len(anchors)) if j != i]        # other anchors
        cands += [float(p[i] @ p[j]) for j in range(len(positives)) if j != i]      # other positives (pp)
        cands += [float(a[i] @ n[j]) for j in range(len(negatives))] if n is not None else []
        masked += sum(c > thr for c in cands)
        total += len(cands)
    return masked / total


@pytest.mark.parametrize("cached", [False, True])
def test_gist_counts_the_masked_share_of_in_batch_candidates(tiny_model_dir, cached):
    from sentence_transformers import SentenceTransformer

    from embedtrain.losses.cached_gist import CachedGISTEmbedLoss
    from embedtrain.losses.gist import MultiNegativeGISTEmbedLoss

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    guide = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.eval()
    rows = pair_rows(6)
    anchors, positives = [r["query"] for r in rows], [r["passage"] for r in rows]
    negatives = [f"a note about topic {i}" for i in range(6)]
    margin = 0.01
    loss = (CachedGISTEmbedLoss(model, guide, margin=margin, mini_batch_size=4) if cached
            else MultiNegativeGISTEmbedLoss(model, guide, margin=margin))
    features = [model.preprocess(col) for col in (anchors, positives, negatives)]
    loss(features, torch.zeros(6))
    share = loss.step_metrics()["gist_masked_fraction"]
    expected = _expected_share(guide, anchors, positives, negatives, margin)
    assert 0 < expected < 1
    assert share == pytest.approx(expected, abs=1e-9)
    assert loss.step_metrics() == {}  # read once per step


def test_gist_run_logs_and_plots_the_masked_share(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, loss={"name": "gist", "params": {"guide": str(tiny_model_dir)}},
                     training={"num_train_epochs": 1, "eval_strategy": "no"})
    result = train(recipe)
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    per_step = record["series"]["gist_masked_fraction"]
    assert [s for s, _ in per_step] == [1, 2, 3]
    assert all(0 <= v <= 1 and math.isfinite(v) for _, v in per_step)
    logged = [e["gist_masked_fraction"] for e in record["log_history"] if "loss" in e and "step" in e]
    assert logged == pytest.approx([v for _, v in per_step], abs=1e-6)  # logging_steps 1: one value per line


def test_dynamic_mining_rounds_are_logged_and_recorded(tmp_path, tiny_model_dir):
    from test_mining_dynamic import _hn_file
    from test_mining_dynamic import _recipe as mining_recipe

    _hn_file(tmp_path)
    path = mining_recipe(tmp_path, tiny_model_dir, {"every_steps": 2, "easy_ratio": 1e-6, "easy_abs": 1.5})
    result = train(load_recipe(path))
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    assert [r["step"] for r in record["mining_rounds"]] == [2, 4]
    refreshed = record["series"]["mining/hn/refreshed"]
    assert refreshed == [[r["step"], float(r["refreshed"])] for r in record["mining_rounds"]]
    assert refreshed[0][1] > 0
    logged = {e["step"]: e["mining/hn/refreshed"] for e in record["log_history"] if "mining/hn/refreshed" in e}
    assert logged == {s: v for s, v in refreshed}  # logging_steps 2 = every_steps: one round per log line


def test_every_stage_writes_the_run_record(tmp_path, tiny4):
    from test_starbucks_smae import smae_recipe

    result = train(load_recipe(smae_recipe(tmp_path, tiny4)))
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    assert record["stage"] == "smae" and record["global_step"] == 3
    assert record["datasets"][0]["format"] == "text" and len(record["datasets"][0]["sha256"]) == 64
    assert (result.final_dir / "training_curves.png").stat().st_size > 10_000
