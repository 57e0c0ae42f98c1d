"""examples/generalization_experiment.py's reporting: the tables and the plot from a results file (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "generalization_experiment.py"


@pytest.fixture(scope="module")
def experiment():
    return load_script(SCRIPT)


def _results(experiment) -> dict:
    start = {"STSBenchmark": 80.0, "SICK-R": 70.0, "STS12": 70.0, "STS13": 70.0, "STS14": 70.0}

    def run(seed, shift, full):
        return {"seed": seed, "scores": {t: v + shift for t, v in start.items()},
                "full_scores": {"Banking77Classification": full, "SciFact": full - 10}}

    return {"start": {"scores": start, "full_scores": {"Banking77Classification": 80.0, "SciFact": 60.0}},
            "full_tasks": experiment.FULL_TASKS,
            "settings": {"plain": {"label": "plain", "runs": [run(1, 1.0, 76.0), run(2, 3.0, 78.0)]},
                         "lora": {"label": "lora", "runs": []}},
            "merge_curves": [{"seed": 1, "points": [{"alpha": 0.5, "scores": {t: v + 0.5 for t, v in start.items()}}]}]}


def test_table_gives_mean_std_and_change_for_sts_and_the_other_task_types(experiment):
    text = experiment.table(_results(experiment))
    lines = text.splitlines()
    plain = [line for line in lines if line.startswith("| plain |")]
    assert len(plain) == 2  # one STS row, one Banking77/SciFact row
    assert "82.00 ± 1.41 (+2.00)" in plain[0]  # STSb: 81 and 83 -> mean 82, sample std 1.41, +2 over 80
    assert "77.00 ± 1.41 (-3.00)" in plain[1] and "67.00 ± 1.41 (+7.00)" in plain[1]
    assert "| lora | 0 | not measured" in text  # a setting without runs says so instead of a number
    assert "| start model | - | 80.00 | 60.00 |" in text


def test_plot_only_draws_the_tradeoff_from_a_results_file(experiment, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results(experiment)))
    out = tmp_path / "plot.png"
    experiment.main(["--plot-only", str(results), "--plot", str(out)])
    assert out.stat().st_size > 10_000  # a real PNG with the points, curve and legend
