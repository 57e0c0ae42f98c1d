"""FSDP (torch FSDP2 through accelerate) on 2 CPU processes with gloo: gathered negatives, GradCache and
dynamic mining train to the same weights as DDP, and checkpoints / the final model are ordinary folders.

accelerate only enables FSDP on accelerators; ``dist_scripts/fsdp_cpu.py`` re-enables it for CPU processes so the
same code paths run here (see that script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

SCRIPTS = os.path.join(os.path.dirname(__file__), "dist_scripts")
FSDP_CONFIG = os.path.join(SCRIPTS, "fsdp_cpu_2proc.yaml")

pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _launch(config, port, *args, cwd=None):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port",
           str(port), *map(str, args)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_fsdp_gathers_in_batch_negatives_like_one_process(tmp_path, tiny_model_dir):
    out = tmp_path / "losses.json"
    _launch(FSDP_CONFIG, 29561, os.path.join(SCRIPTS, "fsdp_cpu.py"), "gather", tiny_model_dir, out, "mnrl")
    ranks = json.loads(out.read_text())
    assert all(r["engine"] == "fsdp" and r["wrapped"].startswith("FSDP") for r in ranks)  # really sharded
    gathered_mean = sum(r["gathered"] for r in ranks) / len(ranks)
    local_mean = sum(r["local_only"] for r in ranks) / len(ranks)
    assert abs(gathered_mean - ranks[0]["full"]) < 1e-4
    assert abs(local_mean - ranks[0]["full"]) > 1e-2


def _hard_negatives(path, rows=16, candidates=4):
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(json.dumps({
                "anchor": f"question number {i} about topic {i * 7 % 5}", "positive": f"answer number {i}",
                "negatives": [{"text": f"wrong answer {i} {j}", "score": 0.5} for j in range(2)],
                "candidates": [f"other text {i} {j}" for j in range(candidates)]}) + "\n")


def _recipe(tmp_path, model_dir, name):
    recipe = {"model": {"name_or_path": str(model_dir)},
              "datasets": [{"name": "hn", "path": "hn.jsonl", "format": "hard_negatives",
                            # every re-scored row counts as easy, so each round refreshes negatives
                            "mining": {"dynamic": {"every_steps": 2, "easy_ratio": 1e-6, "easy_abs": 1.5}}}],
              "loss": {"name": "cached_mnrl", "params": {"gather_across_devices": True, "mini_batch_size": 3}},
              "training": {"per_device_train_batch_size": 4, "max_steps": 4, "save_steps": 2, "logging_steps": 1,
                           "learning_rate": 1e-3, "warmup_steps": 0},
              "speed": {"precision": "fp32"},  # FSDP must equal DDP: compare without bf16 rounding
              "seed": 3,
              "output_dir": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_fsdp_training_with_gradcache_and_dynamic_mining_matches_ddp(tmp_path, tiny_model_dir, repo_root):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    _hard_negatives(tmp_path / "hn.jsonl")
    fsdp_recipe, ddp_recipe = _recipe(tmp_path, tiny_model_dir, "fsdp"), _recipe(tmp_path, tiny_model_dir, "ddp")
    result = tmp_path / "fsdp.json"
    _launch(FSDP_CONFIG, 29562, os.path.join(SCRIPTS, "fsdp_cpu.py"), "train", fsdp_recipe, result, cwd=tmp_path)
    _launch(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml", 29563, "-m", "embedtrain", "train",
            ddp_recipe, cwd=tmp_path)
    info = json.loads(result.read_text())
    assert info["engine"] == "fsdp" and info["global_step"] == 4

    fsdp_final = load_file(tmp_path / "fsdp" / "final" / "model.safetensors")
    ddp_final = load_file(tmp_path / "ddp" / "final" / "model.safetensors")
    start = load_file(tiny_model_dir / "model.safetensors")
    assert fsdp_final.keys() == ddp_final.keys() == start.keys()
    moved = max(float((fsdp_final[k] - start[k]).abs().max()) for k in start)
    diff = max(float((fsdp_final[k] - ddp_final[k]).abs().max()) for k in start)
    assert moved > 1e-4 and diff < 1e-5 * max(1.0, moved * 100), (moved, diff)
    # the mid-run checkpoint is a complete sentence-transformers folder with the dynamic-mining state
    checkpoint = tmp_path / "fsdp" / "checkpoint-2"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "dynamic_mining-hn.npz").exists()
    model = SentenceTransformer(str(tmp_path / "fsdp" / "final"), device="cpu")
    assert np.isfinite(model.encode(["a question"])).all()
    # both runs re-mined the same rows in the same way (lock-step encoding under FSDP, sharded under DDP)
    for step in (2, 4):
        with np.load(tmp_path / "fsdp" / f"checkpoint-{step}" / "dynamic_mining-hn.npz") as f, \
                np.load(tmp_path / "ddp" / f"checkpoint-{step}" / "dynamic_mining-hn.npz") as d:
            assert (f["cursor"] == d["cursor"]).all() and (f["cursor"] > 2).any()
