"""examples/retrieval_tutorial.sh runs end to end (tiny model, 20 distractors, one STS task): the commands of
docs/tutorial_retrieval.md keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_tutorial_script_runs_end_to_end(tiny_model_dir, shared_data_dir, repo_root, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, MODEL=str(tiny_model_dir), MINE_FILTER="--range-min 0", DISTRACTORS="20", TASKS="STS13",
               EPOCHS="1", RUN=str(run), DATA=str(shared_data_dir), EMBEDTRAIN=f"{sys.executable} -m embedtrain",
               PYTHON=sys.executable, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(["bash", str(repo_root / "examples" / "retrieval_tutorial.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    split = json.loads((run / "data" / "split.json").read_text())
    assert not set(split["queries"]["train"]) & set(split["queries"]["heldout"])
    compare = (run / "compare.md").read_text()
    assert "SciFactHeldOut (trained on)" in compare and "STS13 (not trained on)" in compare
    steps = [line.split("\t")[0] for line in (run / "timings.tsv").read_text().splitlines()]
    assert steps == ["split", "eval_base", "mine", "train", "eval_tuned", "compare", "push_dry_run"]
    assert (run / "staged" / "README.md").is_file() and (run / "mined.jsonl.stats.json").is_file()
    assert "mined with" in (run / "staged" / "README.md").read_text()  # the card says how the data was mined
