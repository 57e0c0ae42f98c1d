"""Mining throughput benchmark: top-k search (torch vs faiss) and end-to-end mining (both engines).

Two parts, both printed as tables and saved to ``<workdir>/mining_benchmark.json``:

1. ``search``: :func:`embedtrain.mining.search.top_k` on random unit vectors (dimension 384, like
   all-MiniLM-L6-v2) for each corpus size in ``--search-corpus-sizes``: chunked torch matmul +
   running top-k (memory bounded by ``query_chunk_size x corpus_chunk_size`` scores) and a flat
   faiss inner-product index. Isolates the retrieval cost from the encoder.
2. ``mining``: a full ``embedtrain mine`` job (read, encode corpus and queries, search, filter) with
   the packaged all-MiniLM-L6-v2 on STS Benchmark train paraphrase pairs and an STSb sentence
   corpus, once with the built-in engine and once through
   ``sentence_transformers.util.mine_hard_negatives``.

The figures depend heavily on the machine and its load; the numbers in docs/hard_negatives.md were
taken on a shared 2-core CPU box. Example:

    OMP_NUM_THREADS=2 python examples/mining_benchmark.py --data-dir /work/shared/data \
        --workdir runs/mining_benchmark --pairs 300 --corpus-size 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bench_search(sizes: list[int], n_queries: int, k: int, dim: int = 384) -> list[dict]:
    """Queries/s of torch (chunked) and faiss top-k over random unit vectors."""
    import faiss  # noqa: F401  (imported before timing: the first import takes a while)

    from embedtrain.mining.search import top_k

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for size in sizes:
        corpus = rng.standard_normal((size, dim), dtype=np.float32)
        corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
        for backend, kwargs in (("torch", {"query_chunk_size": 256, "corpus_chunk_size": 16384}),
                                ("faiss", {"use_faiss": True, "query_chunk_size": 256})):
            t = time.perf_counter()
            top_k(queries, corpus, k, **kwargs)
            seconds = time.perf_counter() - t
            peak_scores_mb = (256 * min(size, 16384) * 4 / 2**20) if backend == "torch" else None
            out.append({"backend": backend, "corpus": size, "queries": n_queries, "k": k,
                        "seconds": round(seconds, 3), "queries_per_s": round(n_queries / seconds, 1),
                        "score_block_mb": None if peak_scores_mb is None else round(peak_scores_mb, 1)})
    return out


def write_inputs(data_dir: Path, workdir: Path, pairs: int, corpus_size: int) -> tuple[Path, Path]:
    """STSb-train paraphrase pairs (score >= 4, both directions) and an STSb sentence corpus."""
    rows = json.loads((data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    chosen = [(r["sentence1"], r["sentence2"]) for r in rows if float(r["score"]) >= 4.0][:pairs]
    pairs_path, corpus_path = workdir / "bench_pairs.jsonl", workdir / "bench_corpus.txt"
    with pairs_path.open("w", encoding="utf-8") as fh:
        for a, b in chosen:
            fh.write(json.dumps({"anchor": a, "positive": b}) + "\n")
            fh.write(json.dumps({"anchor": b, "positive": a}) + "\n")
    corpus = dict.fromkeys(s for r in rows for s in (r["sentence1"], r["sentence2"]))
    texts = [t.replace("\n", " ") for t in list(corpus)[:corpus_size]]
    corpus_path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return pairs_path, corpus_path


def bench_mining(args, pairs: Path, corpus: Path) -> list[dict]:
    """End-to-end mining with each engine; returns the runs' statistics."""
    from embedtrain.mining.offline import mine
    from embedtrain.models.resolve import load_model
    from embedtrain.schema.mining import OfflineMiningConfig

    model = load_model("all-MiniLM-L6-v2", device="cpu", max_seq_length=64)
    out = []
    for engine in args.engines:
        cfg = OfflineMiningConfig(model="all-MiniLM-L6-v2", input=str(pairs), output=str(args.workdir / "x.jsonl"),
                                  corpus=str(corpus), num_negatives=5, range_min=3, range_max=50,
                                  relative_margin=0.05, batch_size=64, engine=engine)
        result = mine(cfg, model=model)
        out.append({"engine": engine, **result.stats.summary()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/mining_benchmark"))
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--search-corpus-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--search-queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=300, help="STSb-train pairs (each used in both directions).")
    parser.add_argument("--corpus-size", type=int, default=2000)
    parser.add_argument("--engines", nargs="*", default=["embedtrain", "sentence-transformers"],
                        choices=["embedtrain", "sentence-transformers"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)

    import torch

    results = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
    results["search"] = bench_search(args.search_corpus_sizes, args.search_queries, args.k)
    print("top-k search (random unit vectors, dim 384)")
    print(f"{'backend':8} {'corpus':>8} {'queries':>8} {'k':>4} {'seconds':>8} {'queries/s':>10}")
    for r in results["search"]:
        print(f"{r['backend']:8} {r['corpus']:>8} {r['queries']:>8} {r['k']:>4} {r['seconds']:>8.3f} "
              f"{r['queries_per_s']:>10.1f}")
    if args.engines:
        pairs, corpus = write_inputs(args.data_dir, args.workdir, args.pairs, args.corpus_size)
        results["mining"] = bench_mining(args, pairs, corpus)
        print("\nend-to-end mining, all-MiniLM-L6-v2 (STSb-train pairs, STSb corpus)")
        print(f"{'engine':22} {'queries':>8} {'corpus':>7} {'enc docs/s':>10} {'search q/s':>10} "
              f"{'total s':>8} {'queries/s':>10}")
        for r in results["mining"]:
            print(f"{r['engine']:22} {r['queries']:>8} {r['corpus_size']:>7} {r['corpus_docs_per_s']:>10} "
                  f"{r['search_queries_per_s']:>10} {r['total_s']:>8} {r['queries_per_s']:>10}")
    results["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    path = args.workdir / "mining_benchmark.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\nload average (1 min) {results['load_avg_1m']} -> {results['load_avg_1m_end']}; saved {path}")


if __name__ == "__main__":
    main()
