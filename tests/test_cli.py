"""The ``embedtrain`` command line: help, validation, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import pair_rows, write_recipe, write_rows


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "embedtrain", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("train", "validate", "losses"):
        assert command in proc.stdout


def test_losses_lists_registry():
    proc = run_cli("losses")
    assert proc.returncode == 0 and "cached_mnrl" in proc.stdout and "cosent" in proc.stdout


def test_losses_lists_distillation_losses_with_their_formats():
    proc = subprocess.run([sys.executable, "-m", "embedtrain", "losses"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "1000"})  # wide: one table line per loss
    assert proc.returncode == 0, proc.stderr
    rows = {cells[1].strip(): [c.strip() for c in cells[2:]]
            for cells in (line.split("│") for line in proc.stdout.splitlines()) if len(cells) == 6}
    expected = {"margin_mse": "scored_negatives", "listwise_kl": "scored_negatives",
                "embed_distill": "hard_negatives, pairs, text, triplets",
                "embed_similarity": "hard_negatives, pairs, text, triplets",
                "embed_ranking": "hard_negatives, pairs, text, triplets"}
    for name, formats in expected.items():
        assert rows[name][0] == formats, (name, rows.get(name))
    assert "scored_negatives" in rows["self_distill"][0] and "text" in rows["self_distill"][0]
    assert "scale" in rows["margin_mse"][1] and "teacher_temperature" in rows["listwise_kl"][1]
    assert "[positive, negatives]" in rows["listwise_kl"][2]  # brackets in a description are not rich markup


def test_validate_ok_and_bad_data_line(tmp_path, tiny_model_dir):
    rows = pair_rows(5)
    write_rows(tmp_path / "pairs.jsonl", rows)
    recipe = {"model": {"name_or_path": str(tiny_model_dir)},
              "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}],
              "loss": {"name": "mnrl"}, "output_dir": "out"}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "5 rows" in proc.stdout

    with (tmp_path / "pairs.jsonl").open("a") as fh:
        fh.write('{"query": "only a query"}\n')
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2
    assert "pairs.jsonl:6" in proc.stderr and "Traceback" not in proc.stderr


def test_train_unknown_key_is_one_clear_line(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", "datasets: []\nloss: {name: mnrl}\noutput_dir: o\nmodle: {}\n")
    proc = run_cli("train", str(path))
    assert proc.returncode == 2
    assert "r.yaml:4" in proc.stderr and "Did you mean 'model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_path_cli(tmp_path):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(3))
    path = write_recipe(tmp_path / "r.yaml", {"model": {"name_or_path": "./nowhere"},
                                              "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}],
                                              "loss": {"name": "mnrl"}, "output_dir": "out"})
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "model path not found" in proc.stderr and "r.yaml:2" in proc.stderr
