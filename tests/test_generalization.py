"""The generalization report: trained-on vs not-trained-on tasks before -> after, with a warning on drops (issue 12)."""

from __future__ import annotations

import json

import pytest
from eval_helpers import sts_rows, write_task_config
from helpers import write_recipe, write_rows

from embedtrain.evaluation.generalization import GeneralizationReport, TaskChange


def test_report_splits_tasks_and_warns_on_a_drop():
    report = GeneralizationReport([
        TaskChange("STSBenchmark", "cosine_spearman", 82.0, 83.0, trained=True),
        TaskChange("STS13", "cosine_spearman", 80.6, 79.8, trained=False),
        TaskChange("STS12", "cosine_spearman", 72.4, 72.2, trained=False),
        TaskChange("SciFact", "ndcg_at_10", 64.5, 65.5, trained=False),
    ], threshold=0.5, missing={"Banking77Classification": "banking77_test.json not found"})
    assert [c.task for c in report.not_trained] == ["STS13", "STS12", "SciFact"]
    assert report.warnings == ["STS13 was not trained on and dropped -0.80 (80.60 -> 79.80), more than the 0.5-point "
                               "threshold"]  # STS12 (-0.2) is within the threshold
    # means per metric first (never an nDCG averaged with a Spearman), then over metrics
    assert report.mean_delta(False) == pytest.approx(((-0.8 - 0.2) / 2 + 1.0) / 2)
    text = report.markdown()
    assert "| STS13 | cosine_spearman | no | 80.60 | 79.80 | -0.80 ⚠ |" in text
    assert "not run: Banking77Classification" in text


def test_an_overfitted_run_triggers_the_warning(tmp_path, tiny_model_dir, capsys, monkeypatch, one_thread):
    """Train on TinySTS's pairs with their gold scores inverted: TinySTS (not trained on) must collapse."""
    from embedtrain.cli import run_app

    monkeypatch.setenv("EMBEDTRAIN_CACHE", str(tmp_path / "cache"))
    config = write_task_config(tmp_path)
    inverted = [{"sentence1": r["s1"], "sentence2": r["s2"], "score": -r["sim"]} for r in sts_rows()]
    write_rows(tmp_path / "inverted.jsonl", inverted)
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(tiny_model_dir)},
        "datasets": [{"name": "inv", "path": "inverted.jsonl", "format": "scored_pairs"}],
        "loss": {"name": "cosent"},
        "training": {"max_steps": 30, "learning_rate": 5e-3, "per_device_train_batch_size": 24},
        "generalization": {"tasks": ["TinySTS", "TinyRetrieval"], "task_config": [str(config)],
                           "trained_on": ["TinyRetrieval"], "threshold": 0.5},
        "output_dir": str(tmp_path / "out")})
    run_app(["train", str(recipe)])
    captured = capsys.readouterr()
    assert "generalization: every available local task" in captured.out
    assert "warning:" in captured.out and "TinySTS was not trained on and dropped" in captured.out
    report = json.loads((tmp_path / "out" / "final" / "eval" / "generalization" / "report.json").read_text())
    sts = next(t for t in report["tasks"] if t["task"] == "TinySTS")
    assert sts["trained"] is False and sts["delta"] < -0.5
    assert next(t for t in report["tasks"] if t["task"] == "TinyRetrieval")["trained"] is True
    # the start model's scores were cached for the next run
    assert any((tmp_path / "cache" / "eval").iterdir())


def test_report_is_skipped_without_task_data(tmp_path, tiny_model_dir, caplog, monkeypatch, one_thread):
    from embedtrain.api import train

    monkeypatch.delenv("EMBEDTRAIN_DATA_DIR", raising=False)
    write_rows(tmp_path / "sts.jsonl", [{"sentence1": r["s1"], "sentence2": r["s2"], "score": r["sim"]}
                                        for r in sts_rows()])
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(tiny_model_dir)},
        "datasets": [{"name": "sts", "path": "sts.jsonl", "format": "scored_pairs"}], "loss": {"name": "cosent"},
        "training": {"max_steps": 1}, "output_dir": str(tmp_path / "out")})
    with caplog.at_level("INFO"):
        result = train(recipe)
    assert "generalization" not in result.details and "generalization report skipped" in caplog.text


def test_compare_with_trained_on_flags_regressions():
    from embedtrain.evaluation.compare import compare
    from embedtrain.evaluation.results import EvalSummary, TaskScore

    def summary(label, stsb, sts13):
        return EvalSummary(label, label, "f" * 12, {"STSBenchmark": TaskScore("STSBenchmark", "cosine_spearman", stsb),
                                                    "STS13": TaskScore("STS13", "cosine_spearman", sts13)})

    comparison = compare([summary("base", 82.03, 80.60), summary("tuned", 82.83, 79.80)], trained_on=["STSBenchmark"])
    assert [r.trained for r in comparison.rows] == [True, False]
    assert comparison.drops == ["STS13 (not trained on) dropped -0.80 in tuned"]
    assert "| STS13 (not trained on) | 80.60 | 79.80 (-0.80) |" in comparison.markdown()
    assert compare([summary("a", 82.0, 80.6), summary("b", 82.5, 80.3)], trained_on=["STSBenchmark"]).drops == []
