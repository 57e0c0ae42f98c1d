"""Hard negatives experiment: MNRL vs GIST vs GIST + dynamic re-mining on all-MiniLM-L6-v2.

1. Pairs: STS Benchmark *train* sentence pairs with gold score >= 4 (both directions); corpus: every
   STSb train sentence. No evaluation split is used for training or mining.
2. Offline mining with the packaged all-MiniLM-L6-v2 (``embedtrain.mining``): ``--num-negatives``
   negatives from ranks [range_min, range_max) with NV-Retriever's relative margin, plus a ranked
   list of candidates for dynamic re-mining. Mining throughput is logged and saved.
3. Three runs on the same mined file, same seed / steps / batch / learning rate / temperature:
   ``mnrl`` (in-batch + hard negatives), ``gist`` (guide: a frozen copy of the packaged
   all-MiniLM-L6-v2), ``gist_dynamic`` (GIST + Conan-style re-mining every ``--every-steps``).
4. Offline MTEB evaluation (``embedtrain.evaluation``) of the starting model and the three runs.

Writes ``<workdir>/results.json`` and ``<workdir>/results.md``. Scaled for a 2-core CPU by default:

    python examples/hard_negatives_experiment.py --workdir runs/hn_experiment
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("hn_experiment")
METHODS = ("mnrl", "gist", "gist_dynamic")


def build_pairs(data_dir: Path, workdir: Path, min_score: float, max_pairs: int | None = None,
                corpus_size: int | None = None) -> tuple[Path, Path, int]:
    """Write STSb-train paraphrase pairs (both directions) and the sentence corpus.

    ``max_pairs`` keeps the first N qualifying pairs; ``corpus_size`` caps the corpus (the pairs'
    own sentences always stay in it, the rest are the other STSb-train sentences in file order).
    """
    rows = json.loads((data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    pairs = [(r["sentence1"], r["sentence2"]) for r in rows if float(r["score"]) >= min_score]
    pairs = pairs[:max_pairs] if max_pairs else pairs
    pairs_path, corpus_path = workdir / "pairs.jsonl", workdir / "corpus.jsonl"
    with pairs_path.open("w", encoding="utf-8") as fh:
        for a, b in pairs:
            fh.write(json.dumps({"anchor": a, "positive": b}) + "\n")
            fh.write(json.dumps({"anchor": b, "positive": a}) + "\n")
    corpus = dict.fromkeys(s for pair in pairs for s in pair)
    for text in (s for r in rows for s in (r["sentence1"], r["sentence2"])):
        if corpus_size and len(corpus) >= corpus_size:
            break
        corpus.setdefault(text)
    with corpus_path.open("w", encoding="utf-8") as fh:
        for text in corpus:
            fh.write(json.dumps({"text": text}) + "\n")
    return pairs_path, corpus_path, 2 * len(pairs)


def mine(args, pairs: Path, corpus: Path, workdir: Path) -> dict:
    from embedtrain.mining.offline import run_mining
    from embedtrain.schema.mining import OfflineMiningConfig

    cfg = OfflineMiningConfig(model="all-MiniLM-L6-v2", input=str(pairs), output=str(workdir / "mined.jsonl"),
                              corpus=str(corpus), num_negatives=args.num_negatives, candidates=args.candidates,
                              range_min=args.range_min, range_max=args.range_max,
                              relative_margin=args.relative_margin, batch_size=64,
                              max_seq_length=args.max_seq_length)
    result = run_mining(cfg)
    return result.stats.summary()


def recipe_for(method: str, args, workdir: Path) -> Path:
    loss = {"name": "mnrl", "params": {"temperature": args.temperature}}
    if method.startswith("gist"):
        loss = {"name": "gist", "params": {"guide": "all-MiniLM-L6-v2", "temperature": args.temperature,
                                           "margin_strategy": "absolute", "margin": args.gist_margin}}
    dataset = {"name": "stsb_hn", "path": "mined.jsonl", "format": "hard_negatives",
               "num_negatives": args.num_negatives}
    if method == "gist_dynamic":
        dataset["mining"] = {"dynamic": {"every_steps": args.every_steps, "easy_ratio": args.easy_ratio,
                                         "easy_abs": args.easy_abs, "source": "candidates", "scope": "seen",
                                         "initial_from": args.initial_from}}
    recipe = {
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": args.max_seq_length},
        "datasets": [dataset], "loss": loss,
        "training": {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                     "learning_rate": args.learning_rate, "warmup_ratio": 0.1, "logging_steps": 10,
                     "save_steps": args.steps, "save_total_limit": 1},
        "output_dir": str(workdir / "runs" / method), "seed": args.seed,
    }
    path = workdir / f"recipe_{method}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def train(method: str, args, workdir: Path) -> dict:
    from embedtrain.schema import load_recipe
    from embedtrain.api import train as run_train

    t = time.perf_counter()
    result = run_train(load_recipe(recipe_for(method, args, workdir)), overwrite=True)
    info = {"final_dir": str(result.final_dir), "steps": result.global_step,
            "train_seconds": round(time.perf_counter() - t, 1)}
    state = Path(result.output_dir) / f"checkpoint-{result.global_step}" / "dynamic_mining-stsb_hn.npz"
    if state.exists():
        with np.load(state) as data:
            meta = json.loads(str(data["meta"]))
            info["dynamic_rounds"] = meta["history"]
            info["rows_refreshed_at_least_once"] = int((data["refresh_count"] > 0).sum())
    return info


def evaluate(checkpoint: str, label: str, args, workdir: Path) -> dict[str, float]:
    from embedtrain.evaluation import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, tasks=args.tasks, data_dir=args.data_dir,
                                 output=workdir / "eval" / label, show_progress=False, batch_size=128)
    return {name: round(score.value, 2) for name, score in report.summary.scores.items()}


def markdown(results: dict, tasks: list[str]) -> str:
    lines = ["| model | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    base = results["scores"].get("all-MiniLM-L6-v2 (start)")
    for label, scores in results["scores"].items():
        vals = [scores[t] for t in tasks]
        cells = []
        for t, v in zip(tasks, vals):
            delta = "" if base is None or label.endswith("(start)") else f" ({v - base[t]:+.2f})"
            cells.append(f"{v:.2f}{delta}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(vals):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/hn_experiment"))
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--tasks", nargs="+", default=["STSBenchmark", "STS13", "SICK-R"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--min-score", type=float, default=4.0)
    parser.add_argument("--max-pairs", type=int, default=None, help="Use only the first N STSb-train pairs.")
    parser.add_argument("--corpus-size", type=int, default=None, help="Cap the mining corpus at N sentences.")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--num-negatives", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--range-min", type=int, default=5)
    parser.add_argument("--range-max", type=int, default=100)
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--gist-margin", type=float, default=0.0)
    parser.add_argument("--every-steps", type=int, default=20)
    parser.add_argument("--easy-ratio", type=float, default=1.15)
    parser.add_argument("--easy-abs", type=float, default=0.8)
    parser.add_argument("--initial-from", choices=["model", "file"], default="model",
                        help="Dynamic mining: initial scores from the model at train start or from the mined file.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--no-start-eval", action="store_true", help="Do not evaluate the starting model.")
    parser.add_argument("--mined", type=Path, default=None,
                        help="Use this mined file (from an earlier run with the same settings) instead of mining.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    t_start = time.perf_counter()
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "runs": {}, "scores": {}}
    pairs, corpus, n_pairs = build_pairs(args.data_dir, workdir, args.min_score, args.max_pairs, args.corpus_size)
    results["pairs"] = n_pairs
    if args.mined is not None:  # reuse an earlier mining run (same settings) instead of mining again
        import shutil

        if args.mined.resolve() != (workdir / "mined.jsonl").resolve():
            shutil.copyfile(args.mined, workdir / "mined.jsonl")
        stats = json.loads(args.mined.with_name(args.mined.name + ".stats.json").read_text(encoding="utf-8"))
        results["mining"] = {k: v for k, v in stats.items() if k != "config"}
    else:
        results["mining"] = mine(args, pairs, corpus, workdir)
    if not args.skip_eval and not args.no_start_eval:
        results["scores"]["all-MiniLM-L6-v2 (start)"] = evaluate("all-MiniLM-L6-v2", "start", args, workdir)
    for method in args.methods:
        results["runs"][method] = info = train(method, args, workdir)
        if not args.skip_eval:
            results["scores"][method] = evaluate(info["final_dir"], method, args, workdir)
        results["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        (workdir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    if results["scores"]:
        table = markdown(results, args.tasks)
        (workdir / "results.md").write_text(table + "\n", encoding="utf-8")
        print(table)
    print(json.dumps({"mining": results["mining"], "runs": results["runs"]}, indent=2))


if __name__ == "__main__":
    main()
