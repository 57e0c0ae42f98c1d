"""Evaluation outputs: mteb JSON + summary layout, no stale results across checkpoints, --compare, grids."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from eval_helpers import sts_rows, write_task_config
from scipy.stats import spearmanr
from typer.testing import CliRunner

from embedtrain.cli import app
from embedtrain.evaluation.results import load_summary
from embedtrain.evaluation.runner import evaluate_checkpoint

TASKS = ["TinySTS", "TinyRetrieval"]


def _copy_model(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval"), dirs_exist_ok=True)
    return dst


def _scores(report) -> dict[str, float]:
    return {name: s.value for name, s in report.summary.scores.items()}


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def task_config(tmp_path_factory):
    return write_task_config(tmp_path_factory.mktemp("tasks"))


def test_results_layout_under_the_checkpoint(tmp_path, tiny_model_dir, task_config):
    import mteb

    ckpt = _copy_model(tiny_model_dir, tmp_path / "run1" / "final")
    report = evaluate_checkpoint(ckpt, tasks=TASKS, task_configs=[task_config], show_progress=False)
    out = ckpt / "eval"
    assert report.output_dir == out
    label, fp = report.summary.label, report.summary.fingerprint
    assert label == "run1-final" and len(fp) == 12
    for task, path in zip(TASKS, report.result_files):
        assert path == out / "results" / f"embedtrain__{label}" / fp / f"{task}.json"
        result = mteb.TaskResult.from_disk(path)  # a real mteb result file
        assert result.task_name == task
        assert 100 * result.get_score() == pytest.approx(report.summary.scores[task].value, abs=1e-3)
    summary_md = (out / "summary.md").read_text()
    assert f"weights fingerprint `{fp}`" in summary_md
    for task in TASKS:
        s = report.summary.scores[task]
        assert f"| {task} | {s.metric} | {s.value:.2f} |" in summary_md
    # one STS and one retrieval task: an nDCG is never averaged with a Spearman correlation
    assert len(report.summary.means()) == 2 and "**mean" not in summary_md
    assert load_summary(ckpt).scores.keys() == report.summary.scores.keys()  # scores.json read back


def test_no_stale_results_across_checkpoints(tmp_path, tiny_model_factory, task_config):
    """Same folder name, shared output folder, reuse on: each set of weights still gets its own scores."""
    seed0, seed1 = tiny_model_factory(seed=0), tiny_model_factory(seed=1)
    a = _copy_model(seed0, tmp_path / "a" / "model")
    b = _copy_model(seed1, tmp_path / "b" / "model")
    shared = tmp_path / "shared"
    kw = {"tasks": TASKS, "task_configs": [task_config], "output": shared, "reuse": True, "show_progress": False}
    ra = evaluate_checkpoint(a, **kw)
    rb = evaluate_checkpoint(b, **kw)
    assert ra.summary.label == rb.summary.label == "model"
    assert ra.summary.fingerprint != rb.summary.fingerprint
    assert set(ra.result_files).isdisjoint(rb.result_files)
    assert _scores(ra) != _scores(rb)
    fresh_b = evaluate_checkpoint(seed1, tasks=TASKS, task_configs=[task_config], output=tmp_path / "fresh",
                                  show_progress=False)
    assert _scores(rb) == pytest.approx(_scores(fresh_b), abs=1e-3)

    # "retrain" a in place (new weights, same path), evaluate into its default folder twice
    ra_default = evaluate_checkpoint(a, tasks=TASKS, task_configs=[task_config], reuse=True, show_progress=False)
    assert _scores(ra_default) == pytest.approx(_scores(ra), abs=1e-3)
    _copy_model(seed1, a)
    ra2 = evaluate_checkpoint(a, tasks=TASKS, task_configs=[task_config], reuse=True, show_progress=False)
    assert ra2.summary.fingerprint == rb.summary.fingerprint
    assert _scores(ra2) == pytest.approx(_scores(fresh_b), abs=1e-3)
    assert load_summary(a).fingerprint == rb.summary.fingerprint


def test_compare_cli_prints_deltas_and_writes_markdown(tmp_path, tiny_model_factory, task_config):
    a = _copy_model(tiny_model_factory(seed=0), tmp_path / "base" / "final")
    b = _copy_model(tiny_model_factory(seed=1), tmp_path / "tuned" / "final")
    for ckpt in (a, b):
        res = _cli("eval", ckpt, "--tasks", ",".join(TASKS), "--task-config", task_config, "--no-progress")
        assert res.exit_code == 0, res.output
        assert "TinyRetrieval" in res.output and "summary.md" in res.output
    sa, sb = load_summary(a), load_summary(b)
    md = tmp_path / "cmp.md"
    res = _cli("eval", "--compare", a, b, "-o", md)
    assert res.exit_code == 0, res.output
    assert "base-final" in res.output and "tuned-final (Δ)" in res.output
    lines = md.read_text().splitlines()
    assert lines[0] == "| task | base-final | tuned-final (Δ) |"
    for task in TASKS:
        va, vb = sa.scores[task].value, sb.scores[task].value
        cell = f"{vb:.2f} ({vb - va:+.2f})"
        assert f"| {task} | {va:.2f} | {cell} |" in lines
        assert cell in res.output
    assert not any("**mean" in line for line in lines)  # different metrics: no mean row
    # compare also accepts eval folders; a folder never evaluated is a clear error
    assert _cli("eval", "--compare", a / "eval", b / "eval").exit_code == 0
    with pytest.raises(Exception, match="run `embedtrain eval` on it first"):
        _cli("eval", "--compare", a, tmp_path)


def test_means_are_per_metric_never_across_metrics():
    from embedtrain.evaluation.compare import compare
    from embedtrain.evaluation.results import EvalSummary, TaskScore, markdown_table

    def summary(label, sts12, sts13, scifact):
        scores = {"STS12": TaskScore("STS12", "cosine_spearman", sts12),
                  "STS13": TaskScore("STS13", "cosine_spearman", sts13),
                  "SciFact": TaskScore("SciFact", "ndcg_at_10", scifact)}
        return EvalSummary(label, label, "f" * 12, scores)

    a, b = summary("a", 70.0, 80.0, 60.0), summary("b", 72.0, 81.0, 50.0)
    assert a.means() == {"cosine_spearman": 75.0, "ndcg_at_10": 60.0} and a.mean() is None
    assert "| **mean (2 tasks)** | cosine_spearman | **75.00** |" in markdown_table(a)
    comparison = compare([a, b])
    assert [(m.task, m.values) for m in comparison.means] == [("mean cosine_spearman (2 tasks)", [75.0, 76.5])]
    assert "| **mean cosine_spearman (2 tasks)** | 75.00 | 76.50 (+1.50) |" in comparison.markdown()


def _model_with_strong_last_layer(src, dst):
    """The tiny random model with its last layer's weights scaled up, so dropping it changes the scores."""
    import torch

    from embedtrain.models.resolve import load_model
    from embedtrain.models.truncate import encoder_layers

    model = load_model(src, device="cpu")
    with torch.no_grad():
        for param in encoder_layers(model)[-1].parameters():
            param.mul_(8.0)
    model.save(str(dst))
    return dst


def test_grid_dims_layers_writes_table_png_and_full_cell_is_plain_score(tmp_path, tiny_model_dir, task_config):
    from embedtrain.models.resolve import load_model
    from embedtrain.models.truncate import truncated_copy

    model_dir = _model_with_strong_last_layer(tiny_model_dir, tmp_path / "model")
    out = tmp_path / "out"
    res = _cli("eval", model_dir, "--tasks", ",".join(TASKS), "--task-config", task_config,
               "--dims", "8,32", "--layers", "1,2", "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "layers (rows) x dims (columns)" in res.output
    grid = json.loads((out / "grid.json").read_text())
    assert grid["layers"] == [1, 2] and grid["dims"] == [8, 32]
    cells = {t: {(c["layers"], c["dim"]): c["score"] for c in v} for t, v in grid["scores"].items()}
    plain = load_summary(out)
    for task in TASKS:
        assert set(cells[task]) == {(1, 8), (1, 32), (2, 8), (2, 32)}
        assert cells[task][(2, 32)] == plain.scores[task].value  # untruncated cell = the plain run
    assert "mean" not in cells  # the two tasks report different metrics, which are never averaged

    # a truncated cell is the score of the truncated model (first layer, first 8 dims)
    rows = sts_rows()
    small = truncated_copy(load_model(model_dir, device="cpu"), layers=1)
    e1, e2 = small.encode([r["s1"] for r in rows])[:, :8], small.encode([r["s2"] for r in rows])[:, :8]
    cos = (e1 * e2).sum(1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))
    assert cells["TinySTS"][(1, 8)] == pytest.approx(100 * spearmanr([r["sim"] for r in rows], cos).statistic,
                                                     abs=1e-3)
    for task in TASKS:  # the layer axis matters for this model: a grid that ignored it would fail here
        assert cells[task][(1, 32)] != pytest.approx(cells[task][(2, 32)], abs=1e-2)

    md = (out / "grid.md").read_text()
    assert "## TinySTS (cosine_spearman)" in md and "| layers \\ dims | 8 | 32 |" in md
    assert f"| 2 | {cells['TinySTS'][(2, 8)]:.2f} | {cells['TinySTS'][(2, 32)]:.2f} |" in md
    png = (out / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # every truncated cell has its own mteb JSON
    exp = out / "results" / "embedtrain__" f"{plain.label}" / plain.fingerprint / "experiments"
    assert sorted(p.name for p in exp.iterdir()) == ["dim_32__layers_1", "dim_8__layers_1", "dim_8__layers_2"]


def test_grid_rejects_out_of_range_axes(tmp_path, tiny_model_dir, task_config):
    from embedtrain.errors import CheckpointError

    with pytest.raises(CheckpointError, match="model has 32-dim embeddings"):
        evaluate_checkpoint(tiny_model_dir, tasks=["TinySTS"], task_configs=[task_config], dims=[8, 64],
                            output=tmp_path / "o", show_progress=False)
    res = _cli("eval", tiny_model_dir, "--dims", "8,x")
    assert res.exit_code == 2 and "comma-separated integers" in res.output
