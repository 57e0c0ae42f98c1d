"""Real model: the quickstart recipe (shortened) on the packaged all-MiniLM-L6-v2 and bundled STSb data."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quickstart_improves_stsb(tmp_path, repo_root):
    out = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, "-m", "embedtrain", "train", str(repo_root / "recipes" / "quickstart.yaml"),
         "--set", "training.max_steps=60", "--set", f"output_dir={out}"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = re.search(r"sts-test\s*│\s*([\d.]+)\s*│\s*([\d.]+)", proc.stdout)
    assert row, proc.stdout
    before, after = float(row.group(1)), float(row.group(2))
    # Untrained, the packaged model must reproduce its published MTEB STSBenchmark score (82.03).
    assert abs(before - 82.03) < 0.1
    assert after > before
    assert (out / "final" / "model.safetensors").exists()
