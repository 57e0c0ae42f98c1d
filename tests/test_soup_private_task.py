"""A greedy soup can be steered by a private dev task defined in a task YAML (issue 19)."""

from __future__ import annotations

import pytest
from eval_helpers import write_task_config

from embedtrain.cli import run_app
from embedtrain.errors import RecipeError


def test_greedy_soup_on_a_task_yaml(tmp_path, tiny_model_factory, capsys):
    config = write_task_config(tmp_path)
    a, b = tiny_model_factory(seed=0), tiny_model_factory(seed=1)
    run_app(["soup", str(a), str(b), str(tmp_path / "soup"), "--method", "greedy", "--mteb-task", "TinySTS",
             "--task-config", str(config)])
    out = capsys.readouterr().out
    assert "on TinySTS" in out and (tmp_path / "soup" / "model.safetensors").is_file()


def test_unknown_private_task_suggests_the_local_one(tmp_path, tiny_model_factory):
    from embedtrain.api import soup

    config = write_task_config(tmp_path)
    with pytest.raises(RecipeError, match="Did you mean 'TinySTS'"):
        soup([tiny_model_factory(seed=0), tiny_model_factory(seed=1)], tmp_path / "soup", method="greedy",
             mteb_task="TinySTs", task_configs=[config])
