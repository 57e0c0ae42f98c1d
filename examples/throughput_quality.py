"""Quality gate for the throughput defaults: the fast training path must score as fp32 stock does.

Two recipes, each trained with

* ``fp32``: ``speed: {precision: fp32, bucketing: false, sort_cached_batches: false}`` - exactly the stock
  sentence-transformers trainer in float32 (what embedtrain did before ``speed:`` existed);
* ``fast``: the default ``speed:`` settings (bf16 autocast where the hardware has it, bucketing);
* ``fast_noattdrop`` (optional): the defaults plus ``attention_dropout: 0``,

and evaluated with the offline MTEB harness (exact fp32 encoding):

1. **quickstart**: recipes/quickstart.yaml (CoSENT on STS Benchmark train) -> the five STS tasks;
2. **retrieval**: MNRL on SciFact (query, title + abstract) pairs of a random half of the test queries
   (seq 256, batch 32, 3 epochs) -> nDCG@10 on the *other* half of the queries against the full corpus
   (task ``SciFactHeldOut``), plus the five STS tasks.

    python examples/throughput_quality.py --data-dir ../shared/data --workdir runs/throughput_quality --seeds 42 43
    python examples/throughput_quality.py --kinds quickstart --variants fp32 fast --seeds 42 43 44 --max-steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
STS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14"]
VARIANTS = {
    "fp32": {"precision": "fp32", "bucketing": False, "sort_cached_batches": False},
    "fast": {},
    "fast_noattdrop": {"attention_dropout": 0.0},
}


def split_scifact(data_dir: Path, workdir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Train pairs of half the SciFact test queries; a BEIR folder + task file for the other half."""
    src = data_dir / "scifact"
    lines = (src / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    header, judged = lines[0], [x.split("\t") for x in lines[1:] if x.strip()]
    queries = sorted({q for q, _, _ in judged})
    random.Random(seed).shuffle(queries)
    train_q = set(queries[: len(queries) // 2])
    corpus = {}
    for line in (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        corpus[d["_id"]] = f"{d.get('title', '')} {d['text']}".strip()
    qtext = {json.loads(x)["_id"]: json.loads(x)["text"] for x in (src / "queries.jsonl").read_text().splitlines()}
    train = workdir / "scifact_train.jsonl"
    with train.open("w", encoding="utf-8") as fh:
        for q, d, _ in judged:
            if q in train_q:
                fh.write(json.dumps({"anchor": qtext[q], "positive": corpus[d]}) + "\n")
    beir = workdir / "scifact_heldout"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    (beir / "corpus.jsonl").write_text((src / "corpus.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    (beir / "queries.jsonl").write_text("".join(x + "\n" for x in (src / "queries.jsonl").read_text().splitlines()
                                                if json.loads(x)["_id"] in set(queries) - train_q), encoding="utf-8")
    (beir / "qrels" / "test.tsv").write_text(
        "\n".join([header, *("\t".join(r) for r in judged if r[0] not in train_q)]) + "\n", encoding="utf-8")
    task = workdir / "task.yaml"
    task.write_text("tasks:\n  - name: SciFactHeldOut\n    type: retrieval\n    main_score: ndcg_at_10\n"
                    f"    beir_dir: {beir.resolve()}\n    description: SciFact test queries not trained on "
                    f"(split seed {seed}), full corpus\n", encoding="utf-8")
    return train, task


def recipe(kind: str, variant: str, seed: int, workdir: Path, train_file: Path, data_dir: Path,
           max_steps: int | None = None) -> Path:
    out = workdir / "runs" / f"{kind}_{variant}_s{seed}"
    if kind == "quickstart":
        data = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text(encoding="utf-8"))
        data["datasets"][0]["path"] = str(ROOT / "examples" / "data" / "stsb" / "train.jsonl")
        data["evaluators"] = []
        data["training"]["save_steps"] = 100_000
    else:
        data = {"model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": 256},
                "datasets": [{"name": "scifact", "path": str(train_file), "format": "pairs"}],
                "loss": {"name": "mnrl"},
                "training": {"num_train_epochs": 3, "per_device_train_batch_size": 32, "learning_rate": 2e-5,
                             "warmup_steps": 0.1, "save_steps": 100_000, "logging_steps": 5}}
    if max_steps is not None:  # a shorter run (warm-up stays a fraction of it)
        data["training"]["max_steps"] = max_steps
    data["speed"] = VARIANTS[variant]
    data["generalization"] = {"enabled": False}  # evaluated below, on the same tasks for every variant
    data["output_dir"], data["seed"] = str(out), seed
    path = workdir / f"{kind}_{variant}_s{seed}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--workdir", type=Path, default=Path("runs/throughput_quality"))
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--kinds", nargs="+", default=["quickstart", "retrieval"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--quickstart-variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="Variants of the quickstart recipe (default: --variants).")
    p.add_argument("--max-steps", type=int, default=None,
                   help="Stop every training run after this many optimizer steps (default: the recipes' epochs); "
                        "results.json keys then carry the step count, so runs of different lengths stay apart.")
    args = p.parse_args()

    from embedtrain.api import train
    from embedtrain.evaluation import evaluate_checkpoint
    from embedtrain.schema import load_recipe

    args.workdir.mkdir(parents=True, exist_ok=True)
    train_file, task_file = split_scifact(args.data_dir, args.workdir)
    results_path = args.workdir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for kind in args.kinds:
        tasks = STS if kind == "quickstart" else ["SciFactHeldOut", *STS]
        for seed in args.seeds:
            variants = args.quickstart_variants if kind == "quickstart" and args.quickstart_variants else args.variants
            for variant in variants:  # interleaved, so machine load hits every variant alike
                key = f"{kind}/{variant}/s{seed}" + (f"/{args.max_steps}steps" if args.max_steps else "")
                if key in results:
                    continue
                t = time.perf_counter()
                result = train(load_recipe(recipe(kind, variant, seed, args.workdir, train_file, args.data_dir,
                                                 args.max_steps)),
                               overwrite=True)
                seconds = time.perf_counter() - t
                report = evaluate_checkpoint(result.final_dir, tasks=tasks, data_dir=args.data_dir,
                                             task_configs=[task_file], output=args.workdir / "eval" / key,
                                             show_progress=False, batch_size=64)
                results[key] = {"train_seconds": round(seconds, 1), "steps": result.global_step,
                                "scores": {n: round(s.value, 2) for n, s in report.summary.scores.items()}}
                print(key, results[key], flush=True)
                results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_markdown(results, args.workdir / "results.md")


def write_markdown(results: dict, path: Path) -> None:
    """Mean ± std over seeds per variant, and the paired difference (variant - fp32, same seed) per task."""
    lines = []
    for kind in ("quickstart", "retrieval"):
        for length in sorted({"/".join(k.split("/")[3:]) for k in results if k.startswith(kind + "/")}):
            keys = [k for k in results if k.startswith(kind + "/") and "/".join(k.split("/")[3:]) == length]
            tasks = list(results[keys[0]]["scores"])
            title = f"### {kind}" + (f" ({length.replace('steps', ' steps')})" if length else "")
            lines += [title, "", "| variant | seeds | train s (mean) | " + " | ".join(tasks) + " |",
                      "|---|---|---:|" + "---:|" * len(tasks)]
            by_variant = {v: {k.split("/")[2]: results[k] for k in keys if k.split("/")[1] == v} for v in VARIANTS}
            for variant, runs in by_variant.items():
                if not runs:
                    continue
                cells = [_mean_sd([r["scores"][task] for r in runs.values()]) for task in tasks]
                lines.append(f"| {variant} | {len(runs)} | "
                             f"{statistics.mean(r['train_seconds'] for r in runs.values()):.0f} | "
                             + " | ".join(cells) + " |")
            for variant, runs in by_variant.items():
                seeds = sorted(set(runs) & set(by_variant["fp32"])) if variant != "fp32" else []
                if not seeds:
                    continue
                cells = [_mean_sd([runs[s]["scores"][task] - by_variant["fp32"][s]["scores"][task] for s in seeds],
                                  signed=True) for task in tasks]
                lines.append(f"| {variant} - fp32 (paired) | {len(seeds)} | | " + " | ".join(cells) + " |")
            lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


def _mean_sd(values: list[float], signed: bool = False) -> str:
    mean = f"{statistics.mean(values):+.2f}" if signed else f"{statistics.mean(values):.2f}"
    return mean + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


if __name__ == "__main__":
    main()
