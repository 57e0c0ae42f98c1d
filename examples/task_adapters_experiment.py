"""Experiment: per-task LoRA adapters vs one shared LoRA adapter (same data, steps, rank), from all-MiniLM-L6-v2.

Three tasks are trained in one run (``embedtrain train`` on a task recipe):

* ``text-matching``  -- STSb *train* scored pairs, CoSENT;
* ``classification`` -- Banking77 *train*: (text, another text with the same intent) pairs, MNRL;
* ``retrieval.query`` / ``retrieval.passage`` -- SciFact corpus (title -> abstract) pairs, MNRL, query
  column through the query adapter, passage column through the passage adapter. No test query or qrel
  is used and every document that is relevant to a test query is left out of training.

Variants (identical recipe apart from the adapter names):

* ``base``   -- all-MiniLM-L6-v2 as shipped;
* ``shared`` -- every task names the same adapter (``adapter: shared``): one LoRA for everything;
* ``tasks``  -- one LoRA per task (query and passage separate), jina-embeddings-v3 style.

Evaluation: the offline MTEB harness (local data in ``--data-dir``) with each MTEB task routed to the
adapter its type maps to (:func:`embedtrain.evaluation.evaluate_checkpoint`): STSBenchmark,
SICK-R (text-matching), Banking77Classification (classification), SciFact (retrieval.query/passage).

CPU-sized (2 shared cores)::

    OMP_NUM_THREADS=1 nice -n 10 python examples/task_adapters_experiment.py --variants base shared tasks

Results go to ``--out`` (``results.json`` plus data, recipes, models); the markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import yaml

logger = logging.getLogger("task_adapters_experiment")

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "shared", "tasks")
EVAL_TASKS = ["STSBenchmark", "SICK-R", "Banking77Classification", "SciFact"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--pairs", type=int, default=1280, help="Training pairs per task.")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval-tasks", nargs="+", default=EVAL_TASKS)
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("EMBEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "task_adapters_experiment")
    return p.parse_args()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def build_data(data_dir: Path, out: Path, n: int, seed: int) -> dict[str, Path]:
    """Training files from train splits (STSb, Banking77) and the SciFact corpus minus test-relevant docs."""
    rng = random.Random(seed)
    files = {}
    stsb = json.loads((data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    rng.shuffle(stsb)
    files["stsb"] = out / "stsb_train_pairs.jsonl"
    _write_jsonl(files["stsb"], [{"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": r["score"]}
                                 for r in stsb[:n]])

    banking = json.loads((data_dir / "banking77_train.json").read_text(encoding="utf-8"))
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in banking:
        by_label[row["label"]].append(row["text"])
    order = list(range(len(banking)))
    rng.shuffle(order)
    pairs = []
    for i in order[:n]:
        text, label = banking[i]["text"], banking[i]["label"]
        others = [t for t in by_label[label] if t != text]
        pairs.append({"anchor": text, "positive": rng.choice(others)})
    files["banking"] = out / "banking77_train_pairs.jsonl"
    _write_jsonl(files["banking"], pairs)

    scifact = data_dir / "scifact"
    relevant = set()
    for line in (scifact / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 2:
            relevant.add(parts[1])
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    docs = [d for d in docs if str(d["_id"]) not in relevant and d.get("title") and d.get("text")]
    rng.shuffle(docs)
    files["scifact"] = out / "scifact_title_abstract_pairs.jsonl"
    _write_jsonl(files["scifact"], [{"anchor": d["title"], "positive": d["text"]} for d in docs[:n]])
    logger.info("training data: %d pairs per task (%d SciFact docs relevant to test queries left out)", n,
                len(relevant))
    return files


def recipe_for(variant: str, files: dict[str, Path], args: argparse.Namespace) -> dict:
    lora = {"r": args.rank, "alpha": 2 * args.rank, "dropout": 0.1,
            "target_modules": ["query", "key", "value", "dense"]}
    shared = {"adapter": "shared"} if variant == "shared" else {}
    tasks = [
        {"name": "retrieval.query", "aliases": ["query"], "passage_task": "retrieval.passage", "lora": lora, **shared,
         "datasets": [{"name": "scifact_titles", "path": str(files["scifact"]), "format": "pairs"}],
         "loss": {"name": "mnrl"}},
        {"name": "retrieval.passage", "aliases": ["document", "passage"], "lora": lora, **shared},
        {"name": "text-matching", "lora": lora, **shared,
         "datasets": [{"name": "stsb_train", "path": str(files["stsb"]), "format": "scored_pairs"}],
         "loss": {"name": "cosent"}},
        {"name": "classification", "lora": lora, **shared,
         "datasets": [{"name": "banking77_same_intent", "path": str(files["banking"]), "format": "pairs"}],
         "loss": {"name": "mnrl"}},
    ]
    return {
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": args.max_seq_length},
        "tasks": tasks,
        "training": {"per_device_train_batch_size": args.batch_size, "num_train_epochs": args.epochs,
                     "learning_rate": args.lr, "warmup_ratio": 0.1, "logging_steps": 10, "save_strategy": "no",
                     "report_to": "none", "dataloader_pin_memory": False},
        "output_dir": str(args.out / variant),
        "seed": args.seed,
    }


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from embedtrain.evaluation import evaluate_checkpoint
    from embedtrain.schema import load_recipe
    from embedtrain.api import train

    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    files = build_data(args.data_dir, args.out / "data", args.pairs, args.seed)
    for variant in args.variants:
        entry: dict = {}
        if variant == "base":
            checkpoint = "all-MiniLM-L6-v2"
        else:
            recipe_path = args.out / f"{variant}.yaml"
            recipe_path.write_text(yaml.safe_dump(recipe_for(variant, files, args), sort_keys=False))
            start = time.time()
            result = train(load_recipe(recipe_path), overwrite=True)
            entry["train_seconds"] = round(time.time() - start, 1)
            entry["steps"] = result.global_step
            checkpoint = str(result.final_dir)
        start = time.time()
        report = evaluate_checkpoint(checkpoint, tasks=args.eval_tasks, data_dir=args.data_dir,
                                     output=args.out / "eval" / variant, show_progress=False)
        entry["eval_seconds"] = round(time.time() - start, 1)
        entry["scores"] = {name: round(s.value, 2) for name, s in report.summary.scores.items()}
        results[variant] = entry
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        logger.info("%s: %s", variant, entry)
    print(table(results, args.eval_tasks))


def table(results: dict, tasks: list[str]) -> str:
    lines = ["| model | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    for variant in VARIANTS:
        if variant not in results:
            continue
        scores = [results[variant]["scores"].get(t) for t in tasks]
        known = [s for s in scores if s is not None]
        cells = ["-" if s is None else f"{s:.2f}" for s in scores]
        mean = f"{sum(known) / len(known):.2f}" if known else "-"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
