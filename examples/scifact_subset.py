"""Write a small SciFact (BEIR layout) for CPU-sized retrieval checks, plus a task file for ``embedtrain eval``.

Keeps every test query and every document judged relevant to one, then adds a fixed random sample of
the other documents as distractors (``--distractors``; ``-1``: all 5,183 documents, i.e. full SciFact). Scores
on a subset are higher than on full SciFact (fewer distractors) and are only meant for comparing models or
sub-networks with each other.

    python examples/scifact_subset.py --data-dir ../shared/data --out runs/scifact_mini
    embedtrain eval MODEL --tasks STSBenchmark,SciFactMini --task-config runs/scifact_mini/task.yaml \\
        --data-dir ../shared/data --layers 2,4,6 --dims 32,128,384

``--split-queries`` splits the queries instead into a training half and a held-out half (fixed random split,
``--seed``), for fine-tuning on SciFact without ever evaluating on a query trained on (docs/tutorial_retrieval.md):

* ``scifact_train/``: the corpus, the training queries and their judgements as ``qrels/train.tsv``
  (what ``embedtrain mine --input`` reads);
* ``scifact_heldout/``: the same corpus, the held-out queries and their judgements as ``qrels/test.tsv``;
* ``task.yaml``: the retrieval task ``SciFactHeldOut`` on the held-out half; ``split.json``: the query ids of
  each half and how many relevant documents the halves share (documents, not queries, may be shared).

``--dev-fraction F`` also takes that share of *all* queries out of the training half into ``scifact_dev/``
(``qrels/test.tsv``, task ``SciFactDev``): a development set to choose checkpoints or soup ingredients on, so
the held-out half stays untouched by every decision.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def _write_beir(folder: Path, corpus_lines: list[str], query_lines: list[str], qrels: list[list[str]],
                split: str) -> None:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(line + "\n" for line in corpus_lines), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(line + "\n" for line in query_lines), encoding="utf-8")
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join("\t".join(row) + "\n" for row in qrels), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="Folder holding scifact/ (BEIR layout).")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--distractors", type=int, default=700, help="Random other documents to keep (-1: all).")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--split-queries", action="store_true",
                   help="Write a training half and a held-out half of the queries (see the module docstring).")
    p.add_argument("--train-fraction", type=float, default=0.5, help="Share of the queries in the training half.")
    p.add_argument("--dev-fraction", type=float, default=0.0,
                   help="Share of the queries moved from the training half into a development split.")
    args = p.parse_args(argv)

    src = args.data_dir / "scifact"
    qrels = (src / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    judged = [line.split("\t") for line in qrels[1:] if line.strip()]
    query_ids = {q for q, _, _ in judged}
    relevant = {d for _, d, _ in judged}
    corpus_lines = (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = [json.loads(line) for line in corpus_lines]
    others = [doc for doc in corpus if doc["_id"] not in relevant]
    n_other = len(others) if args.distractors < 0 else min(args.distractors, len(others))
    keep = relevant | {doc["_id"] for doc in random.Random(args.seed).sample(others, n_other)}
    kept_corpus = [line for line, doc in zip(corpus_lines, corpus) if doc["_id"] in keep]
    query_lines = [line for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip() and json.loads(line)["_id"] in query_ids]
    about = f"relevant docs + {n_other} random distractors (seed {args.seed})"

    if not args.split_queries:
        out = args.out / "scifact_mini"
        (out / "qrels").mkdir(parents=True, exist_ok=True)
        (out / "corpus.jsonl").write_text("".join(line + "\n" for line in kept_corpus), encoding="utf-8")
        (out / "queries.jsonl").write_text("\n".join(query_lines) + "\n", encoding="utf-8")
        (out / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
        (args.out / "task.yaml").write_text(
            "tasks:\n  - name: SciFactMini\n    type: retrieval\n    main_score: ndcg_at_10\n"
            f"    beir_dir: {out.resolve()}\n"
            f"    description: SciFact test queries, {about}\n", encoding="utf-8")
        print(f"{len(query_lines)} queries, {len(keep)} documents -> {out}; task file {args.out / 'task.yaml'}")
        return

    ordered = sorted(query_ids, key=int)
    random.Random(args.seed).shuffle(ordered)
    n_train = round(len(ordered) * args.train_fraction)
    n_dev = round(len(ordered) * args.dev_fraction)
    if not 0 <= n_dev < n_train:
        p.error("--dev-fraction must leave training queries (0 <= dev < train fraction)")
    halves = {"train": set(ordered[n_dev:n_train]), "heldout": set(ordered[n_train:])}
    if n_dev:
        halves["dev"] = set(ordered[:n_dev])
    for name, split in (("train", "train"), ("heldout", "test"), ("dev", "test")):
        if name not in halves:
            continue
        ids = halves[name]
        _write_beir(args.out / f"scifact_{name}", kept_corpus,
                    [line for line in query_lines if json.loads(line)["_id"] in ids],
                    [row for row in judged if row[0] in ids], split)
    docs_of = {name: {d for q, d, _ in judged if q in ids} for name, ids in halves.items()}
    summary = {"seed": args.seed, "documents": len(keep), "distractors": n_other,
               "queries": {name: sorted(ids, key=int) for name, ids in halves.items()},
               "pairs": {name: sum(row[0] in ids for row in judged) for name, ids in halves.items()},
               "relevant_documents_shared_by_the_halves": len(docs_of["train"] & docs_of["heldout"])}
    (args.out / "split.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    tasks = "tasks:\n"
    for name, task, what in (("heldout", "SciFactHeldOut", "held-out half"),
                             ("dev", "SciFactDev", "development split")):
        if name in halves:
            tasks += (f"  - name: {task}\n    type: retrieval\n    main_score: ndcg_at_10\n"
                      f"    beir_dir: {(args.out / f'scifact_{name}').resolve()}\n"
                      f"    description: {what} of the SciFact test queries ({len(halves[name])}), {about}\n")
    (args.out / "task.yaml").write_text(tasks, encoding="utf-8")
    if "dev" in halves:
        print(f"{len(halves['dev'])} development queries ({summary['pairs']['dev']} pairs) -> "
              f"{args.out / 'scifact_dev'}")
    print(f"{len(halves['train'])} training queries ({summary['pairs']['train']} pairs), "
          f"{len(halves['heldout'])} held-out queries ({summary['pairs']['heldout']} pairs), {len(keep)} documents "
          f"({summary['relevant_documents_shared_by_the_halves']} relevant to both halves) -> {args.out}")


if __name__ == "__main__":
    main()
