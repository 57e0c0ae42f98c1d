"""Write a small SciFact (BEIR layout) for CPU-sized retrieval checks, plus a task file for ``embedtrain eval``.

Keeps every test query and every document judged relevant to one, then adds a fixed random sample of
the other documents as distractors (``--distractors``). Scores on it are higher than on full SciFact
(fewer distractors) and are only meant for comparing models or sub-networks with each other.

    python examples/scifact_subset.py --data-dir ../shared/data --out runs/scifact_mini
    embedtrain eval MODEL --tasks STSBenchmark,SciFactMini --task-config runs/scifact_mini/task.yaml \\
        --data-dir ../shared/data --layers 2,4,6 --dims 32,128,384
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="Folder holding scifact/ (BEIR layout).")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--distractors", type=int, default=700)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    src = args.data_dir / "scifact"
    qrels = (src / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    judged = [line.split("\t") for line in qrels[1:] if line.strip()]
    query_ids = {q for q, _, _ in judged}
    relevant = {d for _, d, _ in judged}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    others = [doc for doc in corpus if doc["_id"] not in relevant]
    keep = relevant | {doc["_id"] for doc in random.Random(args.seed).sample(others, args.distractors)}

    out = args.out / "scifact_mini"
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus if d["_id"] in keep),
                                      encoding="utf-8")
    queries = [line for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines()
               if json.loads(line)["_id"] in query_ids]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (out / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    (args.out / "task.yaml").write_text(
        "tasks:\n  - name: SciFactMini\n    type: retrieval\n    main_score: ndcg_at_10\n"
        f"    beir_dir: {out.resolve()}\n"
        "    description: SciFact test queries, relevant docs + "
        f"{args.distractors} random distractors (seed {args.seed})\n", encoding="utf-8")
    print(f"{len(queries)} queries, {len(keep)} documents -> {out}; task file {args.out / 'task.yaml'}")


if __name__ == "__main__":
    main()
