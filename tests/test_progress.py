"""Training is not silent in a log file: plain lines every logging_steps when stderr is not a terminal (issue 19)."""

from __future__ import annotations

import re

from helpers import pair_rows, write_recipe, write_rows

from embedtrain.cli import run_app


def test_redirected_training_logs_loss_lr_speed_and_eta(tmp_path, tiny_model_dir, capsys, one_thread):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(32))
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(tiny_model_dir)},
        "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}], "loss": {"name": "mnrl"},
        "training": {"max_steps": 4, "logging_steps": 2, "per_device_train_batch_size": 8},
        "output_dir": str(tmp_path / "out")})
    run_app(["train", str(recipe)])  # captured output is not a terminal: no progress bar can draw
    err = capsys.readouterr().err
    lines = re.findall(r"step (\d+)/4\s+loss [\d.]+ lr [\d.e+-]+\s+[\d.]+ steps/s\s+eta \d+:\d\d:\d\d", err)
    assert lines == ["2", "4"], err[-3000:]
    assert "training done: 4 steps" in err
