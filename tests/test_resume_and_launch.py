"""Kill a run mid-way and resume it; run under a real 2-process accelerate launch on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import pair_rows, write_recipe, write_rows

from embedtrain.api import train
from embedtrain.schema import load_recipe

SCRIPTS = os.path.join(os.path.dirname(__file__), "dist_scripts")


def _recipe(tmp_path, model_dir, out="out", **training):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(48))
    return write_recipe(tmp_path / f"{out}.yaml", {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "mnrl", "params": {"gather_across_devices": True}},
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 2, "save_steps": 4,
                     "logging_steps": 1, **training},
        "output_dir": str(tmp_path / out),
    })


def _env():
    env = dict(os.environ)
    # a narrow terminal, as in CI logs: printed result lines must still not be wrapped
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", COLUMNS="60")
    return env


def test_killed_run_resumes_to_the_same_step_count(tmp_path, tiny_model_dir):
    reference = train(load_recipe(_recipe(tmp_path, tiny_model_dir, out="ref")))
    assert reference.global_step == 12  # 48 rows / 8 per batch x 2 epochs

    recipe_path = _recipe(tmp_path, tiny_model_dir, out="run")
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "train_and_die.py"), str(recipe_path), "4"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
    assert not (tmp_path / "run" / "final").exists()

    resumed = train(load_recipe(recipe_path), resume=True)
    assert resumed.resumed_from == tmp_path / "run" / "checkpoint-4"
    assert resumed.global_step == reference.global_step
    state = json.loads((tmp_path / "run" / "checkpoint-12" / "trainer_state.json").read_text())
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps == list(range(1, 13))  # steps 5..12 came from the resumed run, none repeated
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_model_dir, repo_root):
    recipe_path = _recipe(tmp_path, tiny_model_dir, num_train_epochs=1)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29531",
           "-m", "embedtrain", "train", str(recipe_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 48 rows split over 2 processes x 8 per device = 3 optimizer steps (6 if each process trained alone)
    assert proc.stdout.count("final model:") == 1, proc.stdout
    assert "(3 steps)" in proc.stdout
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()


@pytest.mark.parametrize("loss_name,port", [("mnrl", 29533), ("gist", 29534), ("cached_gist", 29535)])
def test_in_batch_negatives_are_gathered_across_processes(tmp_path, tiny_model_dir, repo_root, loss_name, port):
    """MNRL and both GIST losses (guide: the model itself, so its mask is non-trivial) gather across ranks.

    sentence-transformers' GIST gathers positives / negatives (and their guide scores) but keeps the optional
    anchor-anchor term per process, so that term is switched off here to compare with one process.
    """
    out = tmp_path / "losses.json"
    params = {} if loss_name == "mnrl" else {"guide": str(tiny_model_dir), "contrast_anchors": False}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", str(port),
           os.path.join(SCRIPTS, "gather_check.py"), str(tiny_model_dir), str(out), loss_name, json.dumps(params)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    gathered_mean = sum(r["gathered"] for r in ranks) / len(ranks)
    local_mean = sum(r["local_only"] for r in ranks) / len(ranks)
    full = ranks[0]["full"]
    assert abs(gathered_mean - full) < 1e-4  # each anchor saw all 8 candidates, as one process on the full batch
    assert abs(local_mean - full) > 1e-2  # ...which differs from per-process in-batch negatives


def test_ddp_keeps_gradients_in_its_all_reduce_buckets(tmp_path, tiny_model_dir, repo_root):
    """``gradient_as_bucket_view``: one copy of the gradients per process (the buckets), not two."""
    recipe_path = _recipe(tmp_path, tiny_model_dir, max_steps=1)
    out = tmp_path / "grads.json"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29537",
           os.path.join(SCRIPTS, "grad_storage_check.py"), str(recipe_path), str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["world_size"] == 2 and record["gradients"] > 20
    # DDP's default 25 MB buckets hold the tiny model's gradients in one or two storages
    assert record["storages"] <= 2, record
