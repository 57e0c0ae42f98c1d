"""GIST vs MNRL (and GIST + dynamic re-mining) with a guide stronger than the student, on false-negative-rich data.

Student: all-MiniLM-L6-v2. Guide: all-mpnet-base-v2 (its embeddings of every training text are computed once
and looked up, ``gist``'s ``guide_embeddings``). Training data:

* Banking77 **train**: (text, another text of the same intent) pairs plus one hard negative mined with the
  student (rank window [10, 100), Conan's skip-the-top-10). Banking77 has ~130 train texts per intent, so
  in a batch of 32 other rows' texts of the same intent are frequent in-batch *false* negatives, and many
  mined negatives share the anchor's intent as well;
* SciFact, half of the test queries (``--scifact-train-queries``), each with its relevant abstract. The
  other half is the evaluation task ``SciFactHalf`` (its relevant abstracts + distractors), written as a
  local task YAML; no evaluated query is trained on.

Methods (same data, steps, batch, learning rate, temperature, seed per run):
``mnrl`` (MultipleNegativesRankingLoss), ``gist`` (guide mpnet, absolute margin 0), ``gist_dynamic`` (gist +
Conan re-mining of the Banking77 negatives every ``--every-steps`` from the mined candidates).

Evaluation: the offline MTEB harness on Banking77Classification, the five STS tasks and SciFactHalf, plus
per-item scores for paired bootstrap intervals (examples/experiment_stats.py).

    python examples/gist_experiment.py prepare --data-dir /work/shared/data --workdir runs/gist_exp --guide MPNET_DIR
    python examples/gist_experiment.py run --workdir runs/gist_exp --method gist --seed 1
    python examples/gist_experiment.py report --workdir runs/gist_exp
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiment_stats import comparison_table, evaluate_items, load_json, save_json  # noqa: E402

logger = logging.getLogger("gist_experiment")
STS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14"]
TASKS = ["Banking77Classification", *STS, "SciFactHalf"]
METHODS = ("mnrl", "gist", "gist_dynamic")


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def doc_text(doc: dict) -> str:
    return f"{doc.get('title', '')} {doc['text']}".strip()


def prepare(args) -> None:
    work, data = args.workdir, args.data_dir
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    # Banking77 pairs
    rows = json.loads((data / "banking77_train.json").read_text(encoding="utf-8"))
    by_label: dict = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["text"])
    anchors = rng.sample(rows, args.pairs)
    pairs = []
    for r in anchors:
        others = [t for t in by_label[r["label"]] if t != r["text"]]
        pairs.append({"anchor": r["text"], "positive": rng.choice(others)})
    write_jsonl(work / "banking_pairs.jsonl", pairs)
    texts = list(dict.fromkeys(r["text"] for r in rows))
    write_jsonl(work / "banking_corpus.jsonl", [{"text": t} for t in texts])
    # SciFact query split
    src = data / "scifact"
    qrels = [line.split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:] if line.strip()]
    rel: dict[str, list[str]] = {}
    for q, d, _ in qrels:
        rel.setdefault(q, []).append(d)
    qids = sorted(rel)
    rng.shuffle(qids)
    train_q, eval_q = set(qids[: args.scifact_train_queries]), set(qids[args.scifact_train_queries:])
    queries = {json.loads(line)["_id"]: json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    docs = {d["_id"]: d for d in corpus}
    sci_pairs = [{"anchor": queries[q]["text"], "positive": doc_text(docs[d])} for q in sorted(train_q) for d in rel[q]]
    write_jsonl(work / "scifact_train_pairs.jsonl", sci_pairs)
    eval_docs = {d for q in eval_q for d in rel[q]}
    others = sorted(d["_id"] for d in corpus if d["_id"] not in eval_docs)
    keep = eval_docs | set(random.Random(1).sample(others, args.distractors))
    beir = work / "scifact_half"
    write_jsonl(beir / "corpus.jsonl", [d for d in corpus if d["_id"] in keep])
    write_jsonl(beir / "queries.jsonl", [queries[q] for q in sorted(eval_q)])
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q in sorted(eval_q) for d in rel[q]), encoding="utf-8")
    (work / "tasks.yaml").write_text(yaml.safe_dump({"tasks": [{
        "name": "SciFactHalf", "type": "retrieval", "main_score": "ndcg_at_10", "beir_dir": str(beir.resolve()),
        "description": f"SciFact: the {len(eval_q)} test queries not trained on, their relevant abstracts + "
                       f"{args.distractors} random other abstracts"}]}, sort_keys=False), encoding="utf-8")
    logger.info("%d Banking77 pairs, %d SciFact train pairs (%d queries), SciFactHalf: %d queries, %d docs",
                len(pairs), len(sci_pairs), len(train_q), len(eval_q), len(keep))
    # mining with the student
    from embedtrain.mining.offline import run_mining
    from embedtrain.schema.mining import OfflineMiningConfig

    t = time.perf_counter()
    result = run_mining(OfflineMiningConfig(
        model="all-MiniLM-L6-v2", input=str(work / "banking_pairs.jsonl"), output=str(work / "banking_mined.jsonl"),
        corpus=str(work / "banking_corpus.jsonl"), num_negatives=args.num_negatives, candidates=args.candidates,
        range_min=10, range_max=100, batch_size=64, max_seq_length=args.max_seq_length))
    logger.info("mined in %.0fs: %s", time.perf_counter() - t, result.stats.summary())
    # guide embeddings of every text training can show the loss
    from embedtrain.losses.gist import write_guide_embeddings
    from embedtrain.models.resolve import load_model

    t = time.perf_counter()
    guide = load_model(str(args.guide), device="cpu")
    all_texts = texts + [p["anchor"] for p in sci_pairs] + [p["positive"] for p in sci_pairs]
    write_guide_embeddings(guide, all_texts, work / "guide_embeddings.npz", batch_size=64)
    logger.info("guide embeddings of %d texts in %.0fs", len(set(all_texts)), time.perf_counter() - t)
    save_json(work / "prepare.json", {"pairs": len(pairs), "scifact_pairs": len(sci_pairs), "settings": {
        k: str(v) for k, v in vars(args).items() if k != "func"}})


def recipe(args, method: str, seed: int) -> dict:
    temperature = args.temperature
    if method == "mnrl":
        loss = {"name": "mnrl", "params": {"temperature": temperature}}
    else:
        loss = {"name": "gist", "params": {"guide_embeddings": "guide_embeddings.npz", "temperature": temperature,
                                           "margin_strategy": "absolute", "margin": 0.0}}
    banking = {"name": "banking", "path": "banking_mined.jsonl", "format": "hard_negatives",
               "num_negatives": args.num_negatives}
    if method == "gist_dynamic":
        banking["mining"] = {"dynamic": {"every_steps": args.every_steps, "source": "candidates",
                                         "scope": args.scope, "initial_from": "file"}}
    return {
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": args.max_seq_length},
        "datasets": [banking, {"name": "scifact", "path": "scifact_train_pairs.jsonl", "format": "pairs"}],
        "loss": loss,
        "training": {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                     "learning_rate": args.learning_rate, "warmup_ratio": 0.1, "logging_steps": 10,
                     "save_steps": args.steps, "save_total_limit": 1, "dataloader_num_workers": 0},
        "output_dir": str((args.workdir / "runs" / f"{method}_s{seed}").resolve()), "seed": seed,
    }


def run(args) -> None:
    from embedtrain.api import train
    from embedtrain.schema import load_recipe

    work = args.workdir
    out = work / "results" / f"{args.method}_s{args.seed}.json"
    if out.exists() and not args.force:
        logger.info("%s exists, skipping", out)
        return
    path = work / f"recipe_{args.method}_s{args.seed}.yaml"
    path.write_text(yaml.safe_dump(recipe(args, args.method, args.seed), sort_keys=False), encoding="utf-8")
    t = time.perf_counter()
    result = train(load_recipe(path), overwrite=True)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    scores = evaluate(args, result.final_dir, f"{args.method}_s{args.seed}")
    scores.update(train_seconds=round(train_s, 1), eval_seconds=round(time.perf_counter() - t, 1),
                  final_dir=str(result.final_dir))
    state = Path(result.output_dir) / f"checkpoint-{result.global_step}" / "dynamic_mining-banking.npz"
    if state.exists():
        import numpy as np

        with np.load(state) as data:
            scores["dynamic_rounds"] = json.loads(str(data["meta"]))["history"]
            scores["rows_refreshed"] = int((data["refresh_count"] > 0).sum())
    save_json(out, scores)
    logger.info("%s seed %d: %s", args.method, args.seed, {k: round(v, 2) for k, v in scores["main"].items()})


def evaluate(args, model: str | Path, label: str) -> dict:
    return evaluate_items(model, args.tasks or TASKS, data_dir=args.data_dir,
                          task_configs=[args.workdir / "tasks.yaml"], output=args.workdir / "eval" / label,
                          batch_size=64)


def start(args) -> None:
    out = args.workdir / "results" / "start.json"
    if not out.exists():
        save_json(out, evaluate(args, "all-MiniLM-L6-v2", "start"))


def report(args) -> None:
    tasks = args.tasks or TASKS
    results: dict[str, list] = {}
    for method in METHODS:
        runs = [load_json(p) for p in sorted((args.workdir / "results").glob(f"{method}_s*.json"))]
        if runs:
            results[method] = runs
    start_file = args.workdir / "results" / "start.json"
    lines = []
    if start_file.exists():
        s = load_json(start_file)
        lines += ["start model (all-MiniLM-L6-v2): " + ", ".join(f"{t} {s['main'][t]:.2f}" for t in tasks), ""]
    lines.append(comparison_table({k: v for k, v in results.items() if k != "gist_dynamic"}, tasks, baseline="mnrl"))
    if "gist_dynamic" in results and "gist" in results:
        lines += ["", comparison_table({k: results[k] for k in ("gist", "gist_dynamic")}, tasks, baseline="gist")]
    lines += ["", "train seconds: " + ", ".join(
        f"{m} {sum(r['train_seconds'] for r in rs) / len(rs):.0f}" for m, rs in results.items())]
    text = "\n".join(lines)
    (args.workdir / "report.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/gist_exp"))
    p.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    p.add_argument("--tasks", type=lambda s: [t for t in s.split(",") if t], default=None,
                   help="Comma-separated tasks to evaluate on (default: all).")
    sub = p.add_subparsers(dest="cmd", required=True)
    pre = sub.add_parser("prepare")
    pre.add_argument("--guide", type=Path, required=True, help="all-mpnet-base-v2 folder")
    pre.add_argument("--pairs", type=int, default=2000)
    pre.add_argument("--scifact-train-queries", type=int, default=150)
    pre.add_argument("--distractors", type=int, default=700)
    pre.add_argument("--candidates", type=int, default=12)
    for sp in (pre, r := sub.add_parser("run")):
        sp.add_argument("--num-negatives", type=int, default=1)
        sp.add_argument("--max-seq-length", type=int, default=128)
    r.add_argument("--method", choices=METHODS, required=True)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--steps", type=int, default=120)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--learning-rate", type=float, default=5e-5)
    r.add_argument("--temperature", type=float, default=0.05)
    r.add_argument("--every-steps", type=int, default=20)
    r.add_argument("--scope", choices=["seen", "all"], default="seen")
    r.add_argument("--force", action="store_true")
    sub.add_parser("start")
    sub.add_parser("report")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    {"prepare": prepare, "run": run, "start": start, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
