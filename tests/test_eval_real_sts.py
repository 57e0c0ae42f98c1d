"""REAL-MODEL TEST (the eval area's one): all-MiniLM-L6-v2 reproduces its published MTEB STS scores.

Runs the packaged model on the five STS tasks read from the shared data folder (~1.5 min on 2 CPU cores)
and checks each main score (cosine Spearman x 100) within 0.1 of the MTEB leaderboard value.
"""

from __future__ import annotations

import pytest

from embedtrain.evaluation.runner import evaluate_checkpoint

#: MTEB leaderboard scores of sentence-transformers/all-MiniLM-L6-v2 (see the shared data README).
PUBLISHED = {"STSBenchmark": 82.03, "SICK-R": 77.58, "STS12": 72.37, "STS13": 80.60, "STS14": 75.59}


@pytest.mark.slow  # real model
def test_minilm_reproduces_published_sts_scores(tmp_path, shared_data_dir):
    report = evaluate_checkpoint("all-MiniLM-L6-v2", tasks=list(PUBLISHED), data_dir=shared_data_dir,
                                 output=tmp_path / "eval", batch_size=128, show_progress=False)
    got = {name: score.value for name, score in report.summary.scores.items()}
    assert set(got) == set(PUBLISHED)
    for name, published in PUBLISHED.items():
        assert report.summary.scores[name].metric == "cosine_spearman"
        assert got[name] == pytest.approx(published, abs=0.1), f"{name}: {got[name]:.2f} vs {published}"
