"""Experiment: which training makes the best small sub-networks? (plain vs 2DMSE vs Starbucks vs separate)

For each cell (L layers, D dims) of a small grid, compare the STS score (cosine Spearman x 100) of:

* ``base``      -- all-MiniLM-L6-v2 as shipped, cut to (L, D);
* ``plain``     -- fine-tuned with CoSENT on STSb train, then cut to (L, D);
* ``2dmse``     -- fine-tuned with ``matryoshka2d`` (CoSENT inner, default layers/dims), then cut;
* ``starbucks`` -- fine-tuned with ``starbucks`` (CoSENT inner, default pairs), then cut;
* ``smae_starbucks`` -- SMAE pre-training (``stage: smae``, MLM + MAE decoder on every pair, on the STSb
  train sentences, ``--smae-steps``; one pre-training run, seed 1, shared by the fine-tuning seeds), then
  ``starbucks`` as above;
* ``separate``  -- for each cell of ``--separate-cells`` its own model: the first L layers of MiniLM exported
  (``embedtrain export``) and fine-tuned on the first D dims only (``matryoshka`` with ``dims: [D]``;
  plain CoSENT at full width). The full-size cell is the ``plain`` run itself (same recipe).

Every run goes through the real pipeline (recipe YAML -> ``embedtrain.train.train``) with the same
data, steps, batch size and learning rate, once per seed of ``--seeds`` (defaults: 180 steps of 32 STSb
train pairs, one epoch, lr 5e-5, seeds 1 2 3). The losses use their paper defaults (2DMSE:
sentence-transformers' embedding-softmax KL at T=0.3; Starbucks on STS data: 0.3 * KL on truncated
embeddings, summed over pairs). Grid scores: STSBenchmark test (all 1,379 pairs) and SICK-R (a fixed random sample of
``--sickr-pairs`` 2,000 of its 9,927 pairs) from the shared benchmark folder, computed as
``EmbeddingSimilarityEvaluator`` does (cosine Spearman of the first D dims of an L-layer
``truncated_copy``); the script cross-checks one truncated cell against the evaluator itself.

Every local task (``--full-tasks``): the sub-networks of ``--task-cells`` (default: the full model, 6 x 384;
any (layers, dims) cell can be added) of every trained model are also scored with the offline MTEB harness on
``--eval-tasks`` (5 STS tasks, Banking77, and SciFactHalf from ``examples/gist_experiment.py prepare``:
half of SciFact's test queries, never trained on here either), with per-item scores for paired bootstrap
intervals (examples/experiment_stats.py).

CPU-sized (2 shared cores): two training parts (they may run at the same time), the every-task scoring
(two processes with the same arguments share the runs), then the report::

    OMP_NUM_THREADS=1 nice -n 10 python examples/starbucks_experiment.py --methods base plain 2dmse starbucks smae_starbucks
    OMP_NUM_THREADS=1 nice -n 10 python examples/starbucks_experiment.py --methods separate
    OMP_NUM_THREADS=1 python examples/starbucks_experiment.py --full-tasks --task-config W/tasks.yaml  # x2
    python examples/starbucks_experiment.py --report

Results go to ``--out`` (``results.json``, ``table.md``, models, recipes); the heatmap goes to
``--docs``/img/matryoshka_experiment.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

logger = logging.getLogger("starbucks_experiment")

REPO = Path(__file__).resolve().parents[1]
METHODS = ("base", "plain", "2dmse", "starbucks", "smae_starbucks", "separate")
EVAL_TASKS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14", "Banking77Classification", "SciFactHalf"]
LABELS = {"base": "MiniLM as shipped + cut", "plain": "plain CoSENT + cut", "2dmse": "2DMSE",
          "starbucks": "Starbucks", "smae_starbucks": "SMAE + Starbucks", "separate": "separate small models"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--layers", nargs="+", type=int, default=[2, 4, 6])
    p.add_argument("--dims", nargs="+", type=int, default=[32, 128, 384])
    p.add_argument("--steps", type=int, default=180)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--separate-cells", nargs="+", default=["2,32", "4,128"],
                   help="Cells (layers,dims) that get their own separately trained small model.")
    p.add_argument("--smae-steps", type=int, default=200)
    p.add_argument("--smae-batch-size", type=int, default=32)
    p.add_argument("--sickr-pairs", type=int, default=2000,
                   help="Score SICK-R on a fixed random sample of this many pairs (0: skip SICK-R).")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("EMBEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "starbucks_experiment")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--full-tasks", action="store_true",
                   help="Evaluate the trained models' --task-cells sub-networks on every --eval-tasks task "
                        "(offline MTEB harness, per-item scores for paired bootstrap intervals).")
    p.add_argument("--task-cells", nargs="+", default=["6,384"],
                   help="Cells (layers,dims) scored on every local task by --full-tasks.")
    p.add_argument("--eval-tasks", nargs="+", default=EVAL_TASKS)
    p.add_argument("--task-config", type=Path, nargs="*", default=[],
                   help="Task YAMLs for tasks beyond the built-in ones (e.g. SciFactHalf from "
                        "examples/gist_experiment.py prepare).")
    p.add_argument("--report", action="store_true", help="Only write the table and heatmap from results.json.")
    p.add_argument("--force", action="store_true", help="Retrain models that already exist.")
    return p.parse_args()


# -- scoring ----------------------------------------------------------------------------------------
def load_sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], np.array([float(r["score"]) for r in rows])


class StsScorer:
    """Cosine Spearman x 100 per (layers, dims) cell, encoding each sentence once per model.

    One transformer pass per batch gives every requested layer count at once
    (:class:`~embedtrain.models.subnetworks.SubnetworkEmbedder`: the hidden states after layer ``L``
    through the model's own pooling / normalisation, which is what an ``L``-layer ``truncated_copy``
    outputs); each dim ``D`` is then the first ``D`` columns. :func:`cross_check` compares one
    truncated cell with sentence-transformers' evaluator on a real ``truncated_copy``.
    """

    def __init__(self, data_dir: Path, sickr_pairs: int, seed: int) -> None:
        self.sets = {"STSb": load_sts(data_dir / "stsb_test.json")}
        if sickr_pairs:
            s1, s2, gold = load_sts(data_dir / "sickr_test.json")
            if sickr_pairs < len(gold):  # a fixed random sample keeps CPU evaluation cheap
                keep = np.sort(np.random.default_rng(seed).choice(len(gold), sickr_pairs, replace=False))
                s1, s2, gold = [s1[i] for i in keep], [s2[i] for i in keep], gold[keep]
            self.sets["SICK-R"] = (s1, s2, gold)

    @staticmethod
    def embed_layers(model, sentences: list[str], layers: list[int], batch_size: int = 64) -> dict[int, torch.Tensor]:
        from embedtrain.models.subnetworks import SubnetworkEmbedder

        embedder = SubnetworkEmbedder(model)
        pairs = [(layer, embedder.dim) for layer in layers]
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))  # little padding per batch
        out = {layer: torch.empty(len(sentences), embedder.dim) for layer in layers}
        model.eval()
        with torch.inference_mode():
            for begin in range(0, len(order), batch_size):
                idx = order[begin:begin + batch_size]
                features = model.preprocess([sentences[i] for i in idx])
                for layer, emb in zip(layers, embedder.embed(features, pairs)):
                    out[layer][idx] = emb.float()
        return out

    def scores(self, model, layers: list[int], dims: list[int],
               preds: dict | None = None) -> dict[tuple[int, int], dict[str, float]]:
        """Spearman x 100 per cell and set; with ``preds``, also each pair's cosine (``preds[cell][set]``)."""
        out: dict[tuple[int, int], dict[str, float]] = {(layer, d): {} for layer in layers for d in dims}
        for name, (s1, s2, gold) in self.sets.items():
            unique = list(dict.fromkeys(s1 + s2))
            index = {s: i for i, s in enumerate(unique)}
            for layer, emb in self.embed_layers(model, unique, layers).items():
                a = emb[[index[s] for s in s1]]
                b = emb[[index[s] for s in s2]]
                for d in dims:
                    cos = torch.nn.functional.cosine_similarity(a[:, :d], b[:, :d]).numpy()
                    out[(layer, d)][name] = 100.0 * float(spearmanr(gold, cos).statistic)
                    if preds is not None:
                        preds.setdefault(f"{layer},{d}", {})[name] = np.round(cos, 6).tolist()
        return out


def cross_check(model, scorer: StsScorer, dim: int, expected: float) -> None:
    """The evaluator's number for one cell must match ours."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    s1, s2, gold = scorer.sets["STSb"]
    model.truncate_dim = dim
    result = EmbeddingSimilarityEvaluator(s1, s2, gold.tolist(), name="check", batch_size=64)(model)
    model.truncate_dim = None
    got = 100 * result["check_spearman_cosine"]
    logger.info("cross-check with EmbeddingSimilarityEvaluator: %.3f vs %.3f", got, expected)
    if abs(got - expected) > 0.05:
        raise RuntimeError(f"scorer disagrees with EmbeddingSimilarityEvaluator: {got:.3f} vs {expected:.3f}")


# -- training ---------------------------------------------------------------------------------------
def train_model(name: str, start: str | Path, loss: dict | None, args: argparse.Namespace, seed: int,
                smae: bool = False) -> tuple[Path, float]:
    """Train through a recipe file; returns (final model folder, seconds). Reuses a finished run."""
    from embedtrain.api import train
    from embedtrain.schema import load_recipe

    run_dir = args.out / "runs" / name
    final = run_dir / "final"
    timing = run_dir / "seconds.txt"
    if final.is_dir() and timing.is_file() and not args.force:
        return final, float(timing.read_text())
    if smae:  # SMAE pre-training on the STSb train sentences (both columns), paper defaults
        recipe = {
            "stage": "smae",
            "model": {"name_or_path": str(start), "max_seq_length": 64},
            "datasets": [{"name": f"s{i}", "path": str(args.data_dir / "stsb_train.json"), "format": "text",
                          "columns": {"text": f"sentence{i}"}} for i in (1, 2)],
            "smae": {"pairs": None},
            "training": {"max_steps": args.smae_steps, "per_device_train_batch_size": args.smae_batch_size,
                         "learning_rate": 1e-4, "warmup_steps": 0.05, "lr_scheduler_type": "cosine",
                         "weight_decay": 0.001, "logging_steps": 20, "save_strategy": "no"},
            "output_dir": str(run_dir), "seed": seed,
        }
    else:
        recipe = {
            "model": {"name_or_path": str(start), "max_seq_length": 128},
            "datasets": [{"name": "stsb", "path": str(args.data_dir / "stsb_train.json"), "format": "scored_pairs"}],
            "loss": loss,
            "training": {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                         "learning_rate": args.lr, "warmup_steps": 0.1, "logging_steps": 50,
                         "save_strategy": "no"},
            "output_dir": str(run_dir),
            "seed": seed,
        }
    path = args.out / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    start_time = time.perf_counter()
    result = train(load_recipe(path), overwrite=True)
    seconds = time.perf_counter() - start_time
    timing.write_text(f"{seconds:.1f}")
    logger.info("%s: %d steps in %.0f s", name, result.global_step, seconds)
    return result.final_dir, seconds


def cosent() -> dict:
    return {"name": "cosent", "params": {"scale": 20.0}}


# -- the experiment ---------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> None:
    from embedtrain.export import export_small_model
    from embedtrain.models.resolve import load_model, resolve_model_path
    from embedtrain.models.truncate import num_layers, truncated_copy

    base_path = resolve_model_path("all-MiniLM-L6-v2")
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    scorer = StsScorer(args.data_dir, args.sickr_pairs, 42)
    checked = False

    def save(key: str) -> None:
        """Write this entry, keeping what a concurrent run wrote meanwhile (read-modify-write under a lock)."""
        from filelock import FileLock

        results_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(results_path) + ".lock"):
            current = json.loads(results_path.read_text()) if results_path.is_file() else {}
            current[key] = results[key]
            current["gold"] = {name: gold.tolist() for name, (_, _, gold) in scorer.sets.items()}
            tmp = results_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(current) + "\n")
            tmp.replace(results_path)

    whole_model = {
        "plain": cosent(),
        "2dmse": {"name": "matryoshka2d", "params": {}, "inner": cosent()},
        "starbucks": {"name": "starbucks", "params": {}, "inner": cosent()},
        "smae_starbucks": {"name": "starbucks", "params": {}, "inner": cosent()},
    }
    if "base" in args.methods and "base" not in results:
        model = load_model(base_path, device="cpu")
        preds: dict = {}
        cells = {f"{la},{d}": v for (la, d), v in scorer.scores(model, args.layers, args.dims, preds).items()}
        results["base"] = {"cells": cells, "preds": preds, "train_seconds": 0.0}
        save("base")
    for seed in args.seeds:
        for method in [m for m in args.methods if m in whole_model]:
            key = f"{method}_s{seed}"
            if key in results and not args.force:
                continue
            start = base_path
            if method == "smae_starbucks":
                start, _ = train_model("smae_s1", base_path, None, args, 1, smae=True)
            model_dir, seconds = train_model(key, start, whole_model[method], args, seed)
            model = load_model(model_dir, device="cpu")
            preds = {}
            cells = {f"{la},{d}": v for (la, d), v in scorer.scores(model, args.layers, args.dims, preds).items()}
            if not checked:  # one truncated cell through a real truncated_copy and the evaluator
                layer, dim = min(args.layers), min(args.dims)
                cross_check(truncated_copy(model, layers=layer), scorer, dim, cells[f"{layer},{dim}"]["STSb"])
                checked = True
            results[key] = {"cells": cells, "preds": preds, "train_seconds": seconds}
            save(key)
            logger.info("%s: %s", key, {k: round(v["STSb"], 2) for k, v in cells.items()})
        if "separate" in args.methods:
            key = f"separate_s{seed}"
            entry = results.get(key, {"cells": {}, "preds": {}, "train_seconds": {}})
            base_model = load_model(base_path, device="cpu")
            full_dim, full_layers = base_model.get_embedding_dimension(), num_layers(base_model)
            for cell in args.separate_cells:
                layers, dim = map(int, cell.split(","))
                if cell in entry["cells"] and not args.force:
                    continue
                start = args.out / "runs" / f"minilm-{layers}l" if layers < full_layers else base_path
                if not (Path(start) / "modules.json").is_file():
                    export_small_model(base_path, start, layers=layers, overwrite=True)
                loss = cosent() if dim == full_dim else {"name": "matryoshka", "params": {"dims": [dim]},
                                                         "inner": cosent()}
                model_dir, seconds = train_model(f"separate-{layers}l-{dim}d_s{seed}", start, loss, args, seed)
                model = load_model(model_dir, device="cpu")
                preds = {}
                scores = scorer.scores(model, [num_layers(model)], [dim], preds)
                entry["cells"][cell] = scores[(num_layers(model), dim)]
                entry["preds"][cell] = preds[f"{num_layers(model)},{dim}"]
                entry["train_seconds"][cell] = seconds
                results[key] = entry
                save(key)
                logger.info("separate %s seed %d: %.2f", cell, seed, entry["cells"][cell]["STSb"])


def _model_for_cell(args: argparse.Namespace, method: str, seed: int, cell: str, base_path: Path,
                    full: tuple[int, int]) -> tuple[Path, int | None, int] | None:
    """(model folder, layers to cut to or None, dims) that a method's (seed, cell) result comes from;
    ``full`` is the untruncated (layers, dims)."""
    layers, dim = map(int, cell.split(","))
    cut = layers if layers < full[0] else None
    if method == "base":
        return base_path, cut, dim
    if method == "separate":
        if (layers, dim) == full:  # the full-size cell of "separate" is the plain run
            method = "plain"
        else:
            folder = args.out / "runs" / f"separate-{layers}l-{dim}d_s{seed}" / "final"
            return (folder, None, dim) if (folder.parent / "seconds.txt").is_file() else None
    folder = args.out / "runs" / f"{method}_s{seed}" / "final"
    return (folder, cut, dim) if (folder.parent / "seconds.txt").is_file() else None  # written once trained


def _claim(done: Path) -> bool:
    """Whether this process may score ``done``'s run: processes started with the same arguments share the work
    through a ``.claim`` file beside the result (delete leftover claims of a killed process to retry)."""
    done.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(done.with_suffix(".claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def full_tasks(args: argparse.Namespace) -> None:
    """Score each trained model's ``--task-cells`` sub-networks on every local task (one JSON per run)."""
    from embedtrain.models.resolve import load_model, resolve_model_path
    from embedtrain.models.truncate import num_layers
    from experiment_stats import evaluate_items, save_json

    base_path = Path(resolve_model_path("all-MiniLM-L6-v2"))
    base_model = load_model(base_path, device="cpu")
    full = (num_layers(base_model), base_model.get_embedding_dimension())
    for cell in args.task_cells:
        for method in args.methods:
            for seed in [0] if method == "base" else args.seeds:
                key = "base" if method == "base" else f"{method}_s{seed}"
                done = args.out / "tasks" / cell.replace(",", "x") / f"{key}.json"
                source = _model_for_cell(args, method, seed, cell, base_path, full)
                if done.exists() or source is None or not _claim(done):
                    continue
                folder, layers, dim = source
                start = time.perf_counter()
                entry = evaluate_items(folder, args.eval_tasks, data_dir=args.data_dir, task_configs=args.task_config,
                                       output=args.out / "tasks_eval" / cell.replace(",", "x") / key,
                                       layers=layers, dim=dim)
                entry["eval_seconds"] = round(time.perf_counter() - start, 1)
                save_json(done, entry)
                logger.info("%s at %s: %s", key, cell, {k: round(v, 2) for k, v in entry["main"].items()})


def full_task_tables(args: argparse.Namespace) -> list[str]:
    """Per --task-cells cell: every local task, mean ± std per method, each method minus Starbucks (paired
    bootstrap over test items)."""
    from experiment_stats import comparison_table, load_json

    lines = []
    for cell in args.task_cells:
        folder = args.out / "tasks" / cell.replace(",", "x")
        results = {}
        for method in METHODS:
            keys = ["base"] if method == "base" else [f"{method}_s{s}" for s in args.seeds]
            runs = [load_json(folder / f"{k}.json") for k in keys if (folder / f"{k}.json").exists()]
            if runs and len(runs) == len(keys):
                results[LABELS[method]] = runs
        if LABELS["starbucks"] not in results:
            continue
        layers, dim = cell.split(",")
        lines += [f"#### Every local task at {layers} layers x {dim} dims (scores x 100, mean ± std over seeds "
                  f"{args.seeds}; differences: paired bootstrap 95% interval over test items)", "",
                  comparison_table(results, args.eval_tasks, baseline=LABELS["starbucks"]), ""]
    return lines


# -- report -----------------------------------------------------------------------------------------
def _bootstrap(results: dict, a: str, b: str, cell: str, task: str, seeds: list[int]) -> tuple[float, float, float]:
    from experiment_stats import paired_bootstrap

    gold = results["gold"][task]

    def runs(method: str) -> list[dict]:
        keys = ["base"] if method == "base" else [f"{method}_s{s}" for s in seeds]
        if method == "plain" and cell == "6,384":
            keys = [f"plain_s{s}" for s in seeds]
        return [{"kind": "sts", "pred": results[k]["preds"][cell][task], "gold": gold} for k in keys]

    return paired_bootstrap(runs(a), runs(b))


def report(args: argparse.Namespace) -> None:
    results = json.loads((args.out / "results.json").read_text())
    cells = [(layer, dim) for layer in args.layers for dim in args.dims]

    def values(method: str, cell: str, task: str) -> list[float]:
        if method == "base":
            return [results["base"]["cells"][cell][task]] if "base" in results else []
        out = []
        for seed in args.seeds:
            entry = results.get(f"{method}_s{seed}", {})
            if method == "separate" and cell == "6,384":
                entry = results.get(f"plain_s{seed}", {})
            if cell in entry.get("cells", {}):
                out.append(entry["cells"][cell][task])
        return out

    methods = [m for m in METHODS if values(m, "2,32", "STSb") or values(m, "6,384", "STSb")]
    lines = []
    for task in [t for t in ("STSb", "SICK-R") if t in results.get("gold", {})]:
        lines += [f"#### {task} test, cosine Spearman x 100, mean ± std over seeds {args.seeds}", "",
                  "| layers | dims | " + " | ".join(LABELS[m] for m in methods) + " |",
                  "|---:|---:|" + "---:|" * len(methods)]
        for layer, dim in cells:
            cell = f"{layer},{dim}"
            row = []
            for m in methods:
                v = values(m, cell, task)
                row.append("-" if not v else (f"{v[0]:.2f}" if len(v) == 1 else
                                               f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}"))
            lines.append(f"| {layer} | {dim} | " + " | ".join(row) + " |")
        lines.append("")
        others = [m for m in ("plain", "2dmse", "smae_starbucks", "separate") if m in methods]
        if "starbucks" in methods and others:
            lines += [f"Starbucks minus each method on {task}: difference of the seed means and its paired "
                      "bootstrap 95% interval over test pairs", "",
                      "| layers | dims | " + " | ".join(f"Starbucks − {LABELS[m]}" for m in others) + " |",
                      "|---:|---:|" + "---:|" * len(others)]
            for layer, dim in cells:
                cell = f"{layer},{dim}"
                row = []
                for m in others:
                    if len(values(m, cell, task)) != len(args.seeds) or len(values("starbucks", cell, task)) != len(args.seeds):
                        row.append("-")
                        continue
                    other = "plain" if m == "separate" and cell == "6,384" else m
                    if m == "separate" and cell != "6,384":
                        d, lo, hi = _bootstrap_separate(results, cell, task, args.seeds)
                    else:
                        d, lo, hi = _bootstrap(results, "starbucks", other, cell, task, args.seeds)
                    row.append(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
                lines.append(f"| {layer} | {dim} | " + " | ".join(row) + " |")
            lines.append("")
    timing = ["| method | mean training time per seed (s) |", "|---|---:|"]
    for m in methods:
        if m == "base":
            continue
        ts = []
        for seed in args.seeds:
            t = results.get(f"{m}_s{seed}", {}).get("train_seconds")
            if t is not None:
                ts.append(sum(t.values()) if isinstance(t, dict) else t)
        if ts:
            timing.append(f"| {LABELS[m]} | {np.mean(ts):.0f} |")
    plot_heatmaps(args, methods, values, args.docs / "img" / "matryoshka_experiment.png")
    text = "\n".join(lines + full_task_tables(args) + timing)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def plot_heatmaps(args: argparse.Namespace, methods: list[str], values, path: Path) -> None:
    """One STSb heatmap (layers x dims, mean over seeds) per method; cells a method has no model for are blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = {m: np.array([[np.mean(v) if (v := values(m, f"{la},{d}", "STSb")) else np.nan for d in args.dims]
                          for la in args.layers]) for m in methods}
    low, high = np.nanmin(list(grids.values())), np.nanmax(list(grids.values()))
    fig, axes = plt.subplots(1, len(methods), figsize=(2.6 * len(methods) + 0.8, 3.0), squeeze=False)
    for ax, method in zip(axes.flat, methods):
        grid = grids[method]
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto", origin="lower")
        ax.set_xticks(range(len(args.dims)), [str(d) for d in args.dims])
        ax.set_yticks(range(len(args.layers)), [str(la) for la in args.layers])
        ax.set_xlabel("embedding dims")
        ax.set_title(LABELS[method], fontsize=9)
        for i, j in zip(*np.nonzero(~np.isnan(grid))):
            ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if grid[i, j] > (low + high) / 2 else "white")
    axes[0, 0].set_ylabel("layers")
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02)
    fig.suptitle(f"STSb test, cosine Spearman x 100 (mean over seeds {args.seeds})", fontsize=10, y=1.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _bootstrap_separate(results: dict, cell: str, task: str, seeds: list[int]) -> tuple[float, float, float]:
    from experiment_stats import paired_bootstrap

    gold = results["gold"][task]
    a = [{"kind": "sts", "pred": results[f"starbucks_s{s}"]["preds"][cell][task], "gold": gold} for s in seeds]
    b = [{"kind": "sts", "pred": results[f"separate_s{s}"]["preds"][cell][task], "gold": gold} for s in seeds]
    return paired_bootstrap(a, b)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.full_tasks:
        full_tasks(args)
        return
    if not args.report:
        run(args)
    report(args)


if __name__ == "__main__":
    main()
