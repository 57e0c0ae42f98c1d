"""Mining at scale: embedtrain's sharded miner vs ``sentence_transformers.util.mine_hard_negatives``, same corpus.

Corpus: the distinct sentences of the local STS / SICK / Banking77 files (``--data-dir``), cut to each size in
``--corpus-sizes``; pairs: STS Benchmark train paraphrases (score >= 4, both directions). Model:
all-MiniLM-L6-v2 (max_seq_length 128), 5 negatives from ranks < 50 with a 5% relative margin, batch 64.

Every run is a fresh process (so its peak RSS is its own) and prints docs/s (corpus documents, positives
included, / mining seconds, after loading data and model), peak RSS and peak private memory (``RssAnon``, sampled
every 20 ms: RSS without the pages of memory-mapped files, the corpus texts and embeddings included):

* ``st``: sentence-transformers' ``mine_hard_negatives`` (through embedtrain's ``engine: sentence-transformers``,
  which passes the same parameters);
* ``embedtrain``: the default engine, cold (embeddings encoded and written to a memory-mapped file);
* ``embedtrain (reused)``: the same command again: the embedding files are reused (as when margins or the rank
  window are tuned, or a cross-encoder is added);
* ``embedtrain bf16``: cold, ``precision: auto`` (bf16 autocast where the CPU has native bf16, AVX512-BF16 or AMX;
  the precision it resolved to is printed: fp32 on a CPU without them);
* ``embedtrain x2``: ``accelerate launch`` with 2 CPU processes of 1 thread each (2 cores: compare it with the
  single-process rows only when ``--threads 2``); its peak RSS is the main process's.

The table gives each run's cores (processes x threads), its speed relative to ``st`` in the same invocation
(``vs st``: st's mining seconds / the run's), how many queries took their corpus document's vector instead of
being encoded (``share_query_vectors``: the pairs' anchors are STS sentences, most of them also in the corpus) and
the share of the fp32 ``embedtrain`` run's negatives that the run picked too (``same negatives``) and the size of
the run's embedding files (``emb MB``).

    python examples/mining_scale_benchmark.py --workdir runs/mining_scale --corpus-sizes 5000 20000 --max-pairs 1000

**Memory at corpus sizes the real model cannot encode here in reasonable time.** ``--synthetic`` fills the corpus
beyond the local sentences with sentences recombined from their words (seeded; lengths drawn from the local
sentences'), and ``--tiny-model`` mines with a seeded random 2-layer, 32-dim BERT (the all-MiniLM-L6-v2 tokenizer),
so a million documents encode in minutes (without the relative margin, which would drop every row of a random
model). Speed figures of such a run say nothing about real models; the peak RSS and private-memory columns show
how each engine's memory grows with the corpus:

    python examples/mining_scale_benchmark.py --workdir runs/mining_rss --synthetic --tiny-model \
        --corpus-sizes 100000 1000000 --engines st embedtrain
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, resource, sys, threading, time
t0 = time.perf_counter()
PEAK_ANON = [0]


def sample_anon():  # the private memory (RssAnon): RSS without the pages of memory-mapped files
    while True:
        status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
        PEAK_ANON[0] = max(PEAK_ANON[0], int(status["RssAnon"].split()[0]))
        time.sleep(0.02)


threading.Thread(target=sample_anon, daemon=True).start()
from embedtrain.mining.offline import run_mining
from embedtrain.schema.mining import OfflineMiningConfig
cfg = OfflineMiningConfig(**json.loads(sys.argv[1]))
result = run_mining(cfg)
if result.is_main:
    s = result.stats
    print("RESULT", json.dumps({"mining_s": s.total_s, "wall_s": time.perf_counter() - t0,
                                "corpus": s.corpus_size, "queries": s.queries, "written": s.written_rows,
                                "encode_corpus_s": s.encode_corpus_s, "search_s": s.search_s,
                                "reused": s.embeddings_reused, "queries_from_corpus": s.queries_from_corpus,
                                "precision": s.precision,
                                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                "peak_anon_mb": PEAK_ANON[0] / 1024}))
'''


def synthetic_sentences(seed_texts: list[str], n: int, exclude: set[str]) -> list[str]:
    """``n`` distinct sentences not in ``exclude``: words of ``seed_texts`` recombined, lengths drawn from theirs."""
    rng = np.random.default_rng(0)
    words = np.array(sorted({w for t in seed_texts for w in t.split()}), dtype=object)
    lengths = np.array([len(t.split()) for t in seed_texts])
    out: dict[str, None] = {}
    while len(out) < n:
        for length in rng.choice(lengths, size=n - len(out)):
            text = " ".join(rng.choice(words, size=int(length)))
            if text not in exclude:
                out[text] = None
    return list(out)


def inputs(data_dir: Path, workdir: Path, corpus_size: int, synthetic: bool = False) -> tuple[Path, Path]:
    texts: dict[str, None] = {}
    for name in ("stsb_train.json", "stsb_dev.json", "stsb_test.json", "sickr_test.json", "STS12_test.json",
                 "STS13_test.json", "STS14_test.json", "banking77_train.json", "banking77_test.json"):
        for row in json.loads((data_dir / name).read_text(encoding="utf-8")):
            for key in ("sentence1", "sentence2", "text"):
                if isinstance(row.get(key), str) and row[key].strip():
                    texts[row[key].replace("\n", " ").strip()] = None
    corpus = list(texts)[:corpus_size]
    if len(corpus) < corpus_size and synthetic:
        corpus += synthetic_sentences(corpus, corpus_size - len(corpus), set(corpus))
    if len(corpus) < corpus_size:
        raise SystemExit(f"only {len(corpus)} distinct sentences available (--synthetic fills the rest)")
    corpus_path = workdir / f"corpus-{corpus_size}.txt"
    corpus_path.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    pairs_path = workdir / "pairs.jsonl"
    rows = json.loads((data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    with pairs_path.open("w", encoding="utf-8") as fh:
        for r in rows:
            if float(r["score"]) >= 4.0:
                fh.write(json.dumps({"anchor": r["sentence1"], "positive": r["sentence2"]}) + "\n")
                fh.write(json.dumps({"anchor": r["sentence2"], "positive": r["sentence1"]}) + "\n")
    return pairs_path, corpus_path


def negatives(path: Path) -> dict[tuple[str, str], set[str]]:
    """Per written (anchor, positive) row, the set of its negative texts."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {(r["anchor"], r["positive"]): {n["text"] if isinstance(n, dict) else n for n in r["negatives"]}
            for r in rows}


def agreement(rows: dict[tuple[str, str], set[str]], reference: dict[tuple[str, str], set[str]]) -> float:
    """Share of the reference run's negatives that ``rows`` also picked for the same (anchor, positive) row (a row
    one run kept and the other dropped counts as no agreement)."""
    total = sum(len(r) for r in reference.values())
    return sum(len(negs & rows.get(key, set())) for key, negs in reference.items()) / total if total else float("nan")


def run(config: dict, env: dict, processes: int = 1, port: int = 29581) -> dict:
    if processes == 1:
        cmd = [sys.executable, "-c", CHILD, json.dumps(config)]
    else:
        script = Path(config["output"]).with_name("child.py")
        script.write_text(CHILD)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--num_processes", str(processes),
               "--main_process_port", str(port), str(script), json.dumps(config)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


ENGINES = ("st", "embedtrain", "reused", "bf16", "x2")


def embedding_mb(path: Path) -> float:
    """Size of the embedding files a run wrote under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/mining_scale"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--corpus-sizes", type=int, nargs="*", default=[10_000, 40_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=1000, help="pairs mined (first N of the pairs file)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or folder (default %(default)s)")
    parser.add_argument("--tiny-model", action="store_true",
                        help="mine with a seeded random 2-layer, 32-dim BERT built in --workdir (memory at scale)")
    parser.add_argument("--synthetic", action="store_true",
                        help="fill corpora larger than the local sentences with recombined sentences")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help="which rows to run (st and embedtrain always run: the speed and negatives references)")
    parser.add_argument("--reprint", action="store_true",
                        help="print the tables of the last run in --workdir again (agreement recomputed)")
    args = parser.parse_args()
    if args.reprint:
        results = json.loads((args.workdir / "results.json").read_text())
        for size in dict.fromkeys(x["corpus_size"] for x in results):
            score_agreement(results, args.workdir, size)
            show(results, size)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    model = args.model
    if args.tiny_model:
        from embedtrain.testing import build_tiny_model

        model = str(build_tiny_model(args.workdir / "tiny-model"))
    engines = {"st", "embedtrain", *args.engines}
    results = []
    for size in args.corpus_sizes:
        pairs, corpus = inputs(args.data_dir, args.workdir, size, args.synthetic)
        emb = args.workdir / f"emb-{size}"
        shutil.rmtree(emb, ignore_errors=True)
        base = {"model": model, "input": str(pairs), "corpus": str(corpus), "num_negatives": 5,
                "range_max": 50, "relative_margin": 0.05, "batch_size": 64, "max_seq_length": 128,
                "embeddings_dir": str(emb), "max_samples": args.max_pairs}
        if args.tiny_model:  # a random model scores documents about alike: the margin would drop every row
            base["relative_margin"] = None
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   EMBEDTRAIN_CACHE_DIR=str(args.workdir / "cache"), OMP_NUM_THREADS=str(args.threads),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        bf16_emb = args.workdir / f"emb-{size}-bf16"
        shutil.rmtree(bf16_emb, ignore_errors=True)
        runs = [("st", "st", {**base, "engine": "sentence-transformers"}, "st"),
                ("embedtrain", "embedtrain", base, "fp32"), ("reused", "embedtrain (reused)", base, "fp32"),
                ("bf16", "embedtrain bf16", {**base, "precision": "auto", "embeddings_dir": str(bf16_emb)}, "bf16")]
        for key, name, cfg, tag in runs:
            if key not in engines:
                continue
            out = args.workdir / f"out-{size}-{tag}.jsonl"
            r = run({**cfg, "output": str(out)}, env)
            results.append({"engine": name, "corpus_size": size, "cores": args.threads, "output": tag,
                            "emb_mb": embedding_mb(Path(cfg.get("embeddings_dir", emb))) if tag != "st" else 0.0,
                            **r})
        shutil.rmtree(emb, ignore_errors=True)
        shutil.rmtree(bf16_emb, ignore_errors=True)
        if "x2" in engines:
            env2 = dict(env, OMP_NUM_THREADS="1")
            r = run({**base, "output": str(args.workdir / f"out-{size}-x2.jsonl")}, env2, 2)
            results.append({"engine": "embedtrain x2", "corpus_size": size, "cores": 2, "output": "x2",
                            "emb_mb": embedding_mb(emb), **r})
            shutil.rmtree(emb, ignore_errors=True)
        score_agreement(results, args.workdir, size)
        show(results, size)
        (args.workdir / "results.json").write_text(json.dumps(results, indent=1))


def score_agreement(results: list[dict], workdir: Path, size: int) -> None:
    """``same_negatives`` of every run of ``size``: agreement with the fp32 embedtrain run's output."""
    reference = negatives(workdir / f"out-{size}-fp32.jsonl")
    for x in results:
        if x["corpus_size"] == size:
            x["same_negatives"] = agreement(negatives(workdir / f"out-{size}-{x['output']}.jsonl"), reference)


def show(results: list[dict], size: int) -> None:
    """The table of one corpus size."""
    st = next(x for x in results if x["engine"] == "st" and x["corpus_size"] == size)
    print(f"\ncorpus {size:,} sentences + the positives = {st['corpus']:,} documents, {st['queries']:,} queries")
    print(f"{'engine':22} {'cores':>5} {'mining s':>9} {'docs/s':>8} {'vs st':>6} {'peak RSS MB':>12} {'anon MB':>8} "
          f"{'queries from corpus':>20} {'same negatives':>15} {'emb MB':>7}")
    for x in results:
        if x["corpus_size"] != size:
            continue
        name = x["engine"] + (f" ({x['precision']})" if x["output"] == "bf16" else "")
        print(f"{name:22} {x['cores']:>5} {x['mining_s']:>9.1f} {x['corpus'] / x['mining_s']:>8.0f} "
              f"{st['mining_s'] / x['mining_s']:>5.2f}x {x['peak_rss_mb']:>12.0f} {x.get('peak_anon_mb', 0):>8.0f} "
              f"{x.get('queries_from_corpus', 0):>20,} {100 * x['same_negatives']:>14.1f}% "
              f"{x.get('emb_mb', 0.0):>7.1f}")


if __name__ == "__main__":
    main()
