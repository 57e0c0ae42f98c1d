"""Every sub-network wrapper trains every contrastive inner loss with one and with three negative columns.

``starbucks`` / ``matryoshka2d`` wrapping ``gist`` with >= 2 negative columns used to crash at step 1
("different features per column"): the wrappers embed each column on its own and ``gist`` merged the
negative columns' features. The guide of a GIST inner loss runs once per step, not once per sub-network.
"""

from __future__ import annotations

import json
import math

import pytest
from helpers import write_recipe, write_rows

from embedtrain.api import train
from embedtrain.losses import LossContext, build_loss
from embedtrain.models.resolve import load_model
from embedtrain.schema import LossConfig, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

WRAPPERS = {
    "starbucks": {"pairs": [[1, 8], [2, 16], [4, 32]]},
    "matryoshka2d": {"layers": [1, 2], "dims": [8, 16]},
    "matryoshka": {"dims": [32, 8]},
}


def inner_losses(guide: str) -> dict[str, dict]:
    return {
        "mnrl": {"name": "mnrl"},
        "cached_mnrl": {"name": "cached_mnrl", "params": {"mini_batch_size": 3}},
        "gist": {"name": "gist", "params": {"guide": guide}},
        "cached_gist": {"name": "cached_gist", "params": {"guide": guide, "mini_batch_size": 3}},
    }


def rows(n: int, negatives: int) -> list[dict]:
    return [{"query": f"what is item {i} made of", "positive": f"item {i} is made of material {i * 7 % 13}",
             "negatives": [f"item {i + k + 1} has colour {k}" for k in range(negatives)]} for i in range(n)]


@pytest.mark.parametrize("negatives", [1, 3])
@pytest.mark.parametrize("inner", ["mnrl", "cached_mnrl", "gist", "cached_gist"])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapper_trains_inner_loss_with_negative_columns(tmp_path, tiny_model_factory, wrapper, inner, negatives):
    model_dir = tiny_model_factory(num_layers=4, hidden_size=32)
    write_rows(tmp_path / "hn.jsonl", rows(8, negatives))
    recipe = load_recipe(write_recipe(tmp_path / "recipe.yaml", {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "hn", "path": "hn.jsonl", "format": "hard_negatives", "num_negatives": negatives}],
        "loss": {"name": wrapper, "params": WRAPPERS[wrapper], "inner": inner_losses(str(model_dir))[inner]},
        "training": {"per_device_train_batch_size": 6, "max_steps": 1, "save_steps": 1, "logging_steps": 1,
                     "learning_rate": 1e-3},
        "output_dir": str(tmp_path / "out"),
    }))
    result = train(recipe)
    assert result.global_step == 1
    state = json.loads((result.output_dir / "checkpoint-1" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses and all(math.isfinite(v) for v in losses)


def test_the_gist_guide_runs_once_per_step_however_many_sub_networks(tiny4):
    model = load_model(tiny4, device="cpu")
    loss = build_loss(LossConfig(name="starbucks", params={"pairs": [[1, 8], [2, 16], [4, 32]]},
                                 inner=LossConfig(name="gist", params={"guide": str(tiny4)})),
                      model, LossContext(data_format="hard_negatives", field="loss"))
    gist = loss.loss
    guide_forwards = []
    gist.guide[0].register_forward_hook(lambda *a: guide_forwards.append(1))
    columns = [[f"text {c} {i}" for i in range(4)] for c in range(5)]  # anchor, positive, 3 negatives
    for step in range(2):
        loss([model.preprocess(c) for c in columns], None).backward()
        assert gist.guide_calls == step + 1  # one guide pass per step, not one per pair
    assert len(guide_forwards) == 2 * 5  # one forward per column per step
    assert len(loss.last_parts["inner"]) == 3
