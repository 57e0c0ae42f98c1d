"""Experiment: a model soup of fine-tuning runs vs the best single run (all-MiniLM-L6-v2, STSb train, CoSENT).

``--runs`` fine-tuning runs differ in seed *and* data: run ``i`` trains on its own disjoint slice of
STSb *train* (``--pairs`` pairs) with seed ``i``; everything else (steps, batch, lr) is equal. Then:

* ``uniform`` -- ``embedtrain soup RUN... --method uniform OUT``;
* ``greedy``  -- ``embedtrain soup RUN... --method greedy --held-out stsb_dev.jsonl OUT`` (STSb *dev*
  guides the choice, never the test set).

Every run and soup is scored with the offline MTEB harness (``embedtrain eval``'s
``evaluate_checkpoint``) on ``--eval-tasks`` (default STSBenchmark test), and the base model too.

CPU-sized (2 shared cores)::

    OMP_NUM_THREADS=1 nice -n 10 python examples/soup_experiment.py

Results go to ``--out`` (``results.json``, data, recipes, models); the markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

logger = logging.getLogger("soup_experiment")
REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=480, help="STSb train pairs per run (disjoint slices).")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--dev-pairs", type=int, default=400, help="STSb dev pairs for the greedy held-out metric.")
    p.add_argument("--eval-tasks", nargs="+", default=["STSBenchmark"])
    p.add_argument("--eval-base", action=argparse.BooleanOptionalAction, default=True,
                   help="Also evaluate the start model (skip it when its harness score is known).")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("EMBEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "soup_experiment")
    return p.parse_args()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def cli(*args: str) -> None:
    """Run ``embedtrain ARGS`` as a user would (same interpreter)."""
    command = [sys.executable, "-m", "embedtrain", *args]
    logger.info("$ embedtrain %s", " ".join(args))
    subprocess.run(command, check=True)


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from embedtrain.evaluation.runner import evaluate_checkpoint
    from embedtrain.schema import load_recipe
    from embedtrain.api import train

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rows = json.loads((args.data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    random.Random(0).shuffle(rows)
    dev = json.loads((args.data_dir / "stsb_dev.json").read_text(encoding="utf-8"))
    random.Random(0).shuffle(dev)
    _write_jsonl(out / "data" / "stsb_dev.jsonl", dev[: args.dev_pairs])

    results: dict = {}
    results_file = out / "results.json"

    def evaluate(name: str, checkpoint: str) -> None:
        start = time.time()
        report = evaluate_checkpoint(checkpoint, tasks=args.eval_tasks, data_dir=args.data_dir,
                                     output=out / "eval" / name, show_progress=False)
        results.setdefault(name, {})["scores"] = {k: round(s.value, 2) for k, s in report.summary.scores.items()}
        results[name]["eval_seconds"] = round(time.time() - start, 1)
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        logger.info("%s: %s", name, results[name])

    runs = []
    for i in range(args.runs):
        name = f"run{i + 1}"
        part = rows[i * args.pairs:(i + 1) * args.pairs]
        _write_jsonl(out / "data" / f"{name}.jsonl", part)
        recipe = {
            "model": {"name_or_path": "all-MiniLM-L6-v2"},
            "datasets": [{"name": "stsb", "path": str(out / "data" / f"{name}.jsonl"), "format": "scored_pairs"}],
            "loss": {"name": "cosent"},
            "training": {"per_device_train_batch_size": args.batch_size, "num_train_epochs": 1,
                         "learning_rate": args.lr, "warmup_ratio": 0.1, "logging_steps": 10,
                         "save_strategy": "no", "report_to": "none", "dataloader_pin_memory": False},
            "output_dir": str(out / name),
            "seed": i + 1,
        }
        (out / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        start = time.time()
        result = train(load_recipe(out / f"{name}.yaml"), overwrite=True)
        results[name] = {"train_seconds": round(time.time() - start, 1), "steps": result.global_step}
        runs.append(str(result.final_dir))
        evaluate(name, str(result.final_dir))

    dev_file = str(out / "data" / "stsb_dev.jsonl")
    cli("soup", *runs, str(out / "soup_uniform"), "--method", "uniform", "--held-out", dev_file, "--overwrite")
    evaluate("uniform soup", str(out / "soup_uniform"))
    cli("soup", *runs, str(out / "soup_greedy"), "--method", "greedy", "--held-out", dev_file, "--overwrite")
    info = json.loads((out / "soup_greedy" / "soup.json").read_text())
    members = info["members"]
    results["greedy soup"] = {"members": [Path(m).parent.name for m in members]}
    if sorted(members) == sorted(runs):
        results["greedy soup"]["scores"] = results["uniform soup"]["scores"]  # same weights as the uniform soup
    elif len(members) == 1:
        results["greedy soup"]["scores"] = results[Path(members[0]).parent.name]["scores"]
    else:
        evaluate("greedy soup", str(out / "soup_greedy"))
    for name in ("uniform soup", "greedy soup"):
        soup = json.loads((out / f"soup_{name.split()[0]}" / "soup.json").read_text())
        results[name]["dev_score"] = soup.get("soup_score")
        results[name]["dev_individual"] = soup.get("individual_scores")
    if args.eval_base:
        evaluate("base", "all-MiniLM-L6-v2")
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, args.eval_tasks))


def table(results: dict, tasks: list[str]) -> str:
    lines = ["| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, entry in results.items():
        scores = entry.get("scores", {})
        lines.append(f"| {name} | " + " | ".join(f"{scores[t]:.2f}" if t in scores else "-" for t in tasks) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
