"""Experiment: a model soup of fine-tuning runs vs the best single run (all-MiniLM-L6-v2, STSb train, CoSENT).

Per seed set ``k`` (``--seed-sets``), ``--runs`` fine-tuning runs differ in seed *and* data: run ``i`` trains
on its own disjoint slice of STSb *train* (``--pairs`` pairs, slices drawn with seed ``k``) with seed
``10k + i``; everything else (steps, batch, lr) is equal. Then, through the CLI a user would run:

* ``uniform`` -- ``embedtrain soup RUN... OUT --method uniform``;
* ``greedy``  -- ``embedtrain soup RUN... OUT --method greedy --held-out dev.jsonl --eval-held-out test.jsonl``
  (STSb *dev* pairs pick the members; STSb *test* is only reported);
* ``best run`` -- the single run that scores best on the same STSb dev pairs (the fair "best ingredient":
  picking the best on the test set would be an oracle).

The best run and the soups are evaluated with the offline MTEB harness on ``--eval-tasks`` (per-item scores
kept for paired bootstrap intervals, examples/experiment_stats.py)::

    OMP_NUM_THREADS=1 python examples/soup_experiment.py --out runs/soup_exp
    python examples/soup_experiment.py --out runs/soup_exp --report
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_stats import comparison_table, evaluate_items, load_json, save_json  # noqa: E402

logger = logging.getLogger("soup_experiment")
REPO = Path(__file__).resolve().parents[1]
STS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed-sets", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=480, help="STSb train pairs per run (disjoint slices).")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dev-pairs", type=int, default=1500, help="STSb dev pairs for the greedy held-out metric.")
    p.add_argument("--eval-tasks", nargs="+", default=STS)
    p.add_argument("--task-config", type=Path, nargs="*", default=[])
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("EMBEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "soup_experiment")
    p.add_argument("--report", action="store_true")
    return p.parse_args()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def cli(*args: str) -> None:
    """Run ``embedtrain ARGS`` as a user would (same interpreter)."""
    logger.info("$ embedtrain %s", " ".join(args))
    subprocess.run([sys.executable, "-m", "embedtrain", *args], check=True)


def run_set(args: argparse.Namespace, k: int) -> None:
    from embedtrain.api import train
    from embedtrain.schema import load_recipe

    out = args.out / f"set{k}"
    done = out / "result.json"
    if done.exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    rows = json.loads((args.data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    random.Random(k).shuffle(rows)
    dev = json.loads((args.data_dir / "stsb_dev.json").read_text(encoding="utf-8"))
    _write_jsonl(args.out / "data" / "stsb_dev.jsonl", dev[: args.dev_pairs])
    test = json.loads((args.data_dir / "stsb_test.json").read_text(encoding="utf-8"))
    _write_jsonl(args.out / "data" / "stsb_test.jsonl", test)
    runs, train_seconds = [], []
    for i in range(args.runs):
        name = f"run{i + 1}"
        _write_jsonl(out / "data" / f"{name}.jsonl", rows[i * args.pairs:(i + 1) * args.pairs])
        recipe = {
            "model": {"name_or_path": "all-MiniLM-L6-v2"},
            "datasets": [{"name": "stsb", "path": str(out / "data" / f"{name}.jsonl"), "format": "scored_pairs"}],
            "loss": {"name": "cosent"},
            "training": {"per_device_train_batch_size": args.batch_size, "num_train_epochs": 1,
                         "learning_rate": args.lr, "warmup_ratio": 0.1, "logging_steps": 10,
                         "save_strategy": "no", "report_to": "none", "dataloader_pin_memory": False},
            "output_dir": str(out / name),
            "seed": 10 * k + i + 1,
        }
        (out / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        start = time.time()
        result = train(load_recipe(out / f"{name}.yaml"), overwrite=True)
        train_seconds.append(round(time.time() - start, 1))
        runs.append(str(result.final_dir))
    dev_file, test_file = str(args.out / "data" / "stsb_dev.jsonl"), str(args.out / "data" / "stsb_test.jsonl")
    cli("soup", *runs, str(out / "soup_uniform"), "--method", "uniform", "--held-out", dev_file, "--overwrite")
    cli("soup", *runs, str(out / "soup_greedy"), "--method", "greedy", "--held-out", dev_file,
        "--eval-held-out", test_file, "--overwrite")
    greedy = json.loads((out / "soup_greedy" / "soup.json").read_text())
    uniform = json.loads((out / "soup_uniform" / "soup.json").read_text())
    dev_scores = uniform["individual_scores"]
    best = max(runs, key=lambda r: dev_scores[r])
    models = {"best run (dev)": best, "uniform soup": str(out / "soup_uniform")}
    if sorted(greedy["members"]) == sorted(runs):
        greedy_model = "uniform soup"
    elif len(greedy["members"]) == 1:
        greedy_model = "best run (dev)"
    else:
        greedy_model = "greedy soup"
        models["greedy soup"] = str(out / "soup_greedy")
    evals = {}
    for label, path in models.items():
        evals[label] = evaluate_items(path, args.eval_tasks, data_dir=args.data_dir, task_configs=args.task_config,
                                      output=out / "eval" / label.replace(" ", "_"))
    evals["greedy soup"] = evals[greedy_model]
    save_json(done, {"evals": evals, "greedy_members": [Path(m).parent.name for m in greedy["members"]],
                     "greedy_report": greedy["report"], "dev_individual": dev_scores,
                     "dev_uniform": uniform["soup_score"], "dev_greedy": greedy["soup_score"],
                     "best_run": Path(best).parent.name, "train_seconds": train_seconds})


def report(args: argparse.Namespace) -> None:
    sets = [load_json(args.out / f"set{k}" / "result.json") for k in args.seed_sets
            if (args.out / f"set{k}" / "result.json").exists()]
    if not sets:
        return
    results = {label: [s["evals"][label] for s in sets] for label in ("best run (dev)", "uniform soup", "greedy soup")}
    lines = [comparison_table(results, args.eval_tasks, baseline="best run (dev)"), ""]
    for k, s in zip(args.seed_sets, sets):
        lines.append(f"seed set {k}: dev (selection) runs {', '.join(f'{v:.2f}' for v in s['dev_individual'].values())}"
                     f", uniform {s['dev_uniform']:.2f}, greedy {s['dev_greedy']:.2f} keeps {s['greedy_members']}; "
                     f"best run on dev: {s['best_run']}; greedy report on STSb test: "
                     + ", ".join(f"{Path(n).parent.name if n != 'soup' else n} {v:.2f}"
                                 for n, v in s["greedy_report"]["stsb_test.jsonl"].items()))
    text = "\n".join(lines)
    (args.out / "report.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.report:
        for k in args.seed_sets:
            run_set(args, k)
    report(args)


if __name__ == "__main__":
    main()
