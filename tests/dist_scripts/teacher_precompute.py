"""Run under a 2-process launch (gloo): build a 2-teacher store and score pairs, each rank doing its share.

Usage: ``teacher_precompute.py TEACHER_A TEACHER_B STORE_DIR CACHE_DIR OUT_JSON``. The texts and pairs are
fixed (see :func:`texts` / :func:`pairs`, also imported by the test for the 1-process reference). Writes
per rank: how many texts / pairs this rank encoded or scored, and the pair scores it returned.
"""

import json
import sys

import numpy as np
import torch
import torch.distributed as dist

from embedtrain.distill import teachers as T
from embedtrain.train.distributed import close_collective


def texts() -> list:
    docs = [f"document number {i} talks about topic {i % 5}" for i in range(23)]
    queries = [(f"which topic is {i}?", "query") for i in range(6)]
    return docs + queries + docs[:4]  # duplicates are encoded once


def pairs() -> tuple[list[str], list[str]]:
    queries = [f"which topic is {i % 4}?" for i in range(15)]
    documents = [f"document number {i} talks about topic {i % 5}" for i in range(15)]
    return queries + queries[:3], documents + documents[:3]


def main() -> None:
    teacher_a, teacher_b, store_dir, cache_dir, out_file = sys.argv[1:6]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    specs = [T.TeacherSpec("a", teacher_a, weight=1.0, query_prompt="query: "),
             T.TeacherSpec("b", teacher_b, weight=3.0)]
    encoded = []
    original = T.encode_with_teachers

    def counting(texts_, kinds, teachers, **kw):
        encoded.append(len(texts_))
        return original(texts_, kinds, teachers, **kw)

    T.encode_with_teachers = counting
    store = T.precompute_teacher_embeddings(texts(), specs, store_dir)
    scored = []
    scorer = T.BiEncoderScorer(teacher_a, query_prompt="query: ")
    inner_call = scorer.__call__

    def counting_scorer(q, d):
        scored.append(len(q))
        return inner_call(q, d)

    queries, documents = pairs()
    scores = T.score_pairs(queries, documents, counting_scorer,
                           T.PairScoreCache(cache_dir, scorer.fingerprint))
    result = {"rank": rank, "encoded": sum(encoded), "scored": sum(scored), "rows": len(store),
              "scores": np.asarray(scores).tolist()}
    results = [None] * dist.get_world_size()
    dist.all_gather_object(results, result)
    if rank == 0:
        with open(out_file, "w") as fh:
            json.dump(results, fh)
    close_collective()  # as the CLI ends: every rank waits, then the group goes (see its docstring)


if __name__ == "__main__":
    main()
