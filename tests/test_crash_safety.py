"""Kill a real training process anywhere, resume, and get the run an uninterrupted process gets (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import pair_rows, write_recipe, write_rows
from safetensors.torch import load_file

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.io.checkpoints import MANIFEST, atomic_save, incomplete_reason, recover_interrupted_swap, seal

SCRIPT = os.path.join(os.path.dirname(__file__), "dist_scripts", "kill_at.py")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(recipe, *extra, killed: bool):
    proc = subprocess.run([sys.executable, SCRIPT, str(recipe), *extra], env=_env(), capture_output=True, text=True,
                          timeout=600)
    if killed:
        assert proc.returncode == -signal.SIGKILL, (extra, proc.stderr[-3000:])
    else:
        assert proc.returncode == 0, (extra, proc.stderr[-3000:])
    return proc


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _plain_recipe(tmp_path, model_dir, out):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(64))
    return write_recipe(tmp_path / f"{out}.yaml", {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "mnrl"},
        "training": {"per_device_train_batch_size": 8, "max_steps": 8, "save_steps": 2, "logging_steps": 1,
                     "save_total_limit": 2, "learning_rate": 1e-3},
        "output_dir": str(tmp_path / out), "seed": 3,
    })


@pytest.mark.slow
def test_kill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model_dir):
    _run(_plain_recipe(tmp_path, tiny_model_dir, "ref"), killed=False)
    recipe = _plain_recipe(tmp_path, tiny_model_dir, "run")
    run = tmp_path / "run"
    # one process after another: each is killed at the next instant, then resumed by the next one
    _run(recipe, "--kill", "step:3", killed=True)  # between steps: checkpoint-2 complete
    assert incomplete_reason(run / "checkpoint-2") is None
    for point in ("after_model", "after_optimizer", "after_rng", "after_trainer_state", "before_seal"):
        _run(recipe, "--resume", "--kill", f"{point}:1", killed=True)  # during the save of checkpoint-4
        assert incomplete_reason(run / "checkpoint-4") is not None, point
        assert incomplete_reason(run / "checkpoint-2") is None, point  # the complete one is never touched
    _run(recipe, "--resume", "--kill", "final_written:1", killed=True)  # final.tmp complete, not yet final/
    assert (run / "final.tmp").is_dir() and not (run / "final").exists()
    _run(recipe, "--resume", killed=False)  # completes the interrupted save; the run is finished
    _assert_same_weights(run / "final", tmp_path / "ref" / "final")
    # every incomplete checkpoint was reported and kept aside, never deleted
    aside = sorted(p.name for p in run.iterdir() if ".incomplete" in p.name)
    assert aside == ["checkpoint-4.incomplete", "checkpoint-4.incomplete2", "checkpoint-4.incomplete3",
                     "checkpoint-4.incomplete4", "checkpoint-4.incomplete5"]
    # the trainer's log has every step once, as if the run had never been interrupted
    state = json.loads((run / "checkpoint-8" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, 9))
    assert sorted(p.name for p in run.glob("checkpoint-*") if ".incomplete" not in p.name) == \
        ["checkpoint-6", "checkpoint-8"]  # save_total_limit 2, applied to complete checkpoints only
    # resuming a finished run says so and changes nothing
    before = (run / "final" / "model.safetensors").stat().st_mtime_ns
    proc = _run(recipe, "--resume", killed=False)
    assert "already finished" in proc.stderr
    assert (run / "final" / "model.safetensors").stat().st_mtime_ns == before


def _mined_recipe(tmp_path, model_dir, out):
    rows = [{"anchor": f"q{i} what is item {i}", "positive": f"item {i} is thing {i % 7}",
             "negatives": [f"neg {i} {j} of kind {(i + j) % 5}" for j in range(2)],
             "candidates": [f"cand {i} {j} topic {(i * j) % 9}" for j in range(6)]} for i in range(48)]
    write_rows(tmp_path / "mined.jsonl", rows)
    return write_recipe(tmp_path / f"{out}.yaml", {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "mined", "path": "mined.jsonl", "format": "hard_negatives", "num_negatives": 2,
                      "mining": {"dynamic": {"every_steps": 2, "easy_ratio": 1.0001, "easy_abs": 1.0}}}],
        "loss": {"name": "mnrl"},
        "training": {"per_device_train_batch_size": 8, "max_steps": 6, "save_steps": 2, "logging_steps": 1,
                     "learning_rate": 1e-3},
        "output_dir": str(tmp_path / out), "seed": 5,
    })


def _mining_history(checkpoint):
    [state] = checkpoint.glob("dynamic_mining-*.npz")
    with np.load(state, allow_pickle=False) as data:
        return json.loads(str(data["meta"]))["history"], data["refresh_count"].tolist()


@pytest.mark.slow
def test_dynamic_mining_state_is_part_of_the_checkpoint(tmp_path, tiny_model_dir):
    _run(_mined_recipe(tmp_path, tiny_model_dir, "ref"), killed=False)
    recipe = _mined_recipe(tmp_path, tiny_model_dir, "run")
    run = tmp_path / "run"
    _run(recipe, "--kill", "after_trainer_state:2", killed=True)  # checkpoint-4: trainer state, no mining state
    assert incomplete_reason(run / "checkpoint-4") is not None
    _run(recipe, "--resume", "--kill", "after_mining_state:1", killed=True)  # checkpoint-4 again, before its marker
    _run(recipe, "--resume", killed=False)
    history, refreshed = _mining_history(run / "checkpoint-6")
    ref_history, ref_refreshed = _mining_history(tmp_path / "ref" / "checkpoint-6")
    strip = [{k: v for k, v in round_.items() if k != "seconds"} for round_ in history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in ref_history]
    assert sum(r["refreshed"] for r in ref_history) > 0  # the rounds really replaced negatives
    assert refreshed == ref_refreshed
    _assert_same_weights(run / "final", tmp_path / "ref" / "final")


def test_seal_and_incomplete_reason(tmp_path):
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / "optimizer.pt").write_bytes(b"x" * 10)
    assert "no completeness marker" in incomplete_reason(folder)
    seal(folder)
    assert incomplete_reason(folder) is None and (folder / MANIFEST).is_file()
    (folder / "optimizer.pt").write_bytes(b"")  # truncated after sealing
    assert "has 0 bytes, 10 were written" in incomplete_reason(folder)
    (folder / "optimizer.pt").unlink()
    assert "optimizer.pt is missing" in incomplete_reason(folder)


def test_atomic_save_recovers_a_swap_killed_between_renames(tmp_path):
    target = tmp_path / "final"
    atomic_save(lambda d: (os.makedirs(d), open(os.path.join(d, "w"), "w").write("old")), target)
    # simulate a kill after the old folder moved aside and before the new one moved in
    atomic_save(lambda d: (os.makedirs(d), open(os.path.join(d, "w"), "w").write("new")), tmp_path / "staged")
    os.replace(target, tmp_path / "final.old")
    os.replace(tmp_path / "staged", tmp_path / "final.tmp")
    recover_interrupted_swap(target)
    assert (target / "w").read_text() == "new" and not (tmp_path / "final.old").exists()
    # killed while final.tmp was still being written: the old folder stays, the partial one goes
    (tmp_path / "final.tmp").mkdir()
    (tmp_path / "final.tmp" / "w").write_text("partial")
    recover_interrupted_swap(target)
    assert (target / "w").read_text() == "new" and not (tmp_path / "final.tmp").exists()


def _recipe(tmp_path, model_dir, **extra):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(16))
    return write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "mnrl"}, "training": {"per_device_train_batch_size": 8, "max_steps": 2, "save_steps": 2},
        "output_dir": str(tmp_path / "out"), **extra})


def test_overwrite_starts_clean_and_final_is_never_replaced_silently(tmp_path, tiny_model_dir, caplog, one_thread):
    from embedtrain.api import train

    path = _recipe(tmp_path, tiny_model_dir)
    train(path)
    stale = tmp_path / "out" / "checkpoint-20"  # a checkpoint of an older, longer run
    (tmp_path / "out" / "checkpoint-2").rename(stale)
    seal(stale)
    with pytest.raises(RecipeError, match="already holds checkpoint-20.*--overwrite"):
        train(path)
    with caplog.at_level("WARNING"):
        train(path, overwrite=True)
    assert "--overwrite: removed 1 checkpoint(s) and final/" in caplog.text
    assert not stale.exists()  # the old run cannot be resumed into the new one
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-2", "final", "runs"]  # runs/: TensorBoard logs
    for p in (tmp_path / "out").glob("checkpoint-*"):
        import shutil

        shutil.rmtree(p)
    with pytest.raises(RecipeError, match=r"already holds a trained model \(final/\)"):
        train(path)  # only final/ left: still not replaced without --overwrite


def test_output_dir_that_is_a_file_or_empty(tmp_path, tiny_model_dir):
    import yaml

    from embedtrain.api import train, validate

    recipe = yaml.safe_load(_recipe(tmp_path, tiny_model_dir).read_text())
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecipeError, match="output_dir is a file") as info:
        train(write_recipe(tmp_path / "f.yaml", {**recipe, "output_dir": str(tmp_path / "file")}))
    assert info.value.field == "output_dir" and info.value.line is not None
    with pytest.raises(RecipeError, match="output_dir is empty"):
        validate(write_recipe(tmp_path / "e.yaml", {**recipe, "output_dir": ""}))


def test_truncated_weights_are_one_line(tmp_path, tiny_model_dir):
    import shutil

    from embedtrain.models.resolve import load_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot load the model") as info:
        load_model(broken)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("rows", "message"), [
    ([{"sentence1": "a", "sentence2": "b", "score": 1.0}], "needs at least 2 scored pairs"),
    ([{"sentence1": f"a{i}", "sentence2": f"b{i}", "score": 2.0} for i in range(5)], "all 5 gold scores are equal"),
])
def test_degenerate_eval_tasks_are_one_line_and_leave_no_folder(tmp_path, tiny_model_dir, rows, message, capsys):
    from embedtrain.cli import run_app

    write_rows(tmp_path / "sts.jsonl", rows)
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - name: T\n    type: sts\n    files: {test: sts.jsonl}\n")
    out = tmp_path / "eval_out"
    with pytest.raises(SystemExit) as info:
        run_app(["eval", str(tiny_model_dir), "--task-config", str(tmp_path / "tasks.yaml"), "--tasks", "T",
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "sts.jsonl" in err and "Traceback" not in err
    assert not out.exists()


def test_scores_json_is_valid_json_even_for_a_nan_score(tmp_path):
    import math

    from embedtrain.evaluation.results import EvalSummary, TaskScore, load_summary, write_summary

    summary = EvalSummary("m", "m", "f" * 12, {"T": TaskScore("T", "cosine_spearman", float("nan")),
                                                "U": TaskScore("U", "cosine_spearman", 50.0)})
    scores_path, _ = write_summary(summary, tmp_path)
    data = json.loads(scores_path.read_text())  # strict JSON: bare NaN would not parse in most readers
    assert data["scores"]["T"]["value"] is None and "NaN" not in scores_path.read_text()
    assert math.isnan(load_summary(tmp_path).scores["T"].value)
