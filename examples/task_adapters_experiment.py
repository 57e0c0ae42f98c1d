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

Both variants use embedtrain's default LoRA, jina-embeddings-v3's (rank 4, alpha 1, no dropout, every linear
layer and embedding matrix), and run once per seed of ``--seeds``.

Evaluation: the offline MTEB harness (local data in ``--data-dir``) with each MTEB task routed to the
adapter its type maps to, plus per-item scores for paired bootstrap intervals (examples/experiment_stats.py).
Retrieval is ``SciFactHalf`` from ``examples/gist_experiment.py prepare`` (pass its ``tasks.yaml`` with
``--task-config``) or any other retrieval task.

CPU-sized (2 shared cores)::

    OMP_NUM_THREADS=1 python examples/task_adapters_experiment.py --task-config runs/gist_exp/tasks.yaml
    python examples/task_adapters_experiment.py --report

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
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_stats import comparison_table, evaluate_items, load_json, save_json  # noqa: E402

logger = logging.getLogger("task_adapters_experiment")

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "shared", "tasks")
EVAL_TASKS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14", "Banking77Classification", "SciFactHalf"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--pairs", type=int, default=1280, help="Training pairs per task.")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--eval-tasks", nargs="+", default=EVAL_TASKS)
    p.add_argument("--task-config", type=Path, nargs="*", default=[])
    p.add_argument("--report", action="store_true")
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


def recipe_for(variant: str, files: dict[str, Path], args: argparse.Namespace, seed: int) -> dict:
    lora: dict = {}  # embedtrain's default: jina-embeddings-v3's LoRA
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
        "output_dir": str(args.out / f"{variant}_s{seed}"),
        "seed": seed,
    }


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.report:
        from embedtrain.api import train
        from embedtrain.schema import load_recipe

        args.out.mkdir(parents=True, exist_ok=True)
        files = build_data(args.data_dir, args.out / "data", args.pairs, 0)
        jobs = [("base", 0)] if "base" in args.variants else []
        jobs += [(v, seed) for seed in args.seeds for v in args.variants if v != "base"]
        for variant, seed in jobs:
            key = "base" if variant == "base" else f"{variant}_s{seed}"
            done = args.out / "results" / f"{key}.json"
            if done.exists():
                continue
            entry: dict = {}
            if variant == "base":
                checkpoint = "all-MiniLM-L6-v2"
            else:
                recipe_path = args.out / f"{key}.yaml"
                recipe_path.write_text(yaml.safe_dump(recipe_for(variant, files, args, seed), sort_keys=False))
                start = time.time()
                result = train(load_recipe(recipe_path), overwrite=True)
                entry["train_seconds"] = round(time.time() - start, 1)
                entry["steps"] = result.global_step
                checkpoint = str(result.final_dir)
            start = time.time()
            entry.update(evaluate_items(checkpoint, args.eval_tasks, data_dir=args.data_dir,
                                        task_configs=args.task_config, output=args.out / "eval" / key))
            entry["eval_seconds"] = round(time.time() - start, 1)
            save_json(done, entry)
            logger.info("%s: %s", key, {k: round(v, 2) for k, v in entry["main"].items()})
    report(args)


def report(args: argparse.Namespace) -> None:
    results = {}
    for variant in ("shared", "tasks"):
        runs = [load_json(p) for p in sorted((args.out / "results").glob(f"{variant}_s*.json"))]
        if runs:
            results[variant] = runs
    if not results:
        return
    lines = []
    base = args.out / "results" / "base.json"
    if base.exists():
        b = load_json(base)
        lines += ["base all-MiniLM-L6-v2: " + ", ".join(f"{t} {v:.2f}" for t, v in b["main"].items()), ""]
    lines.append(comparison_table(results, args.eval_tasks, baseline="shared"))
    lines += ["", "train seconds: " + ", ".join(
        f"{v} {sum(r['train_seconds'] for r in rs) / len(rs):.0f}" for v, rs in results.items())]
    text = "\n".join(lines)
    (args.out / "report.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
