"""Experiment: which training makes the best small sub-networks? (plain vs 2DMSE vs Starbucks vs separate)

For each cell (L layers, D dims) of a small grid, compare the STS score (cosine Spearman x 100) of:

* ``base``      -- all-MiniLM-L6-v2 as shipped, cut to (L, D);
* ``plain``     -- fine-tuned with CoSENT on STSb train, then cut to (L, D);
* ``2dmse``     -- fine-tuned with ``matryoshka2d`` (CoSENT inner, default layers/dims), then cut;
* ``starbucks`` -- fine-tuned with ``starbucks`` (CoSENT inner, default pairs), then cut;
* ``separate``  -- for each cell its own model: the first L layers of MiniLM exported
  (``embedtrain export``) and fine-tuned on the first D dims only (``matryoshka`` with ``dims: [D]``;
  plain CoSENT at full width). The full-size cell is the ``plain`` run itself (same recipe).

Every run goes through the real pipeline (recipe YAML -> ``embedtrain.train.train``) with the same
data, steps, batch size, learning rate and seed (defaults: 100 steps of 8 STSb train pairs, lr 5e-5,
seed 42). Scores: STSBenchmark test (all 1,379 pairs) and SICK-R (a fixed random sample of
``--sickr-pairs`` 2,000 of its 9,927 pairs) from the shared benchmark folder, computed as
``EmbeddingSimilarityEvaluator`` does (cosine Spearman of the first D dims of an L-layer
``truncated_copy``); the script cross-checks one truncated cell against the evaluator itself.

CPU-sized (2 shared cores): two parts (they may run at the same time), then write the report::

    OMP_NUM_THREADS=1 nice -n 10 python examples/starbucks_experiment.py --methods base plain 2dmse starbucks
    OMP_NUM_THREADS=1 nice -n 10 python examples/starbucks_experiment.py --methods separate
    python examples/starbucks_experiment.py --report

Results go to ``--out`` (``results.json``, ``table.md``, models, recipes); the heatmap goes to
``--docs``/img/matryoshka_experiment.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

logger = logging.getLogger("starbucks_experiment")

REPO = Path(__file__).resolve().parents[1]
METHODS = ("base", "plain", "2dmse", "starbucks", "separate")
LABELS = {"base": "MiniLM as shipped + cut", "plain": "plain CoSENT + cut", "2dmse": "2DMSE",
          "starbucks": "Starbucks", "separate": "separate small models"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--layers", nargs="+", type=int, default=[2, 4, 6])
    p.add_argument("--dims", nargs="+", type=int, default=[32, 128, 384])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sickr-pairs", type=int, default=2000,
                   help="Score SICK-R on a fixed random sample of this many pairs (0: skip SICK-R).")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("EMBEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "starbucks_experiment")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
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

    def scores(self, model, layers: list[int], dims: list[int]) -> dict[tuple[int, int], dict[str, float]]:
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
def train_model(name: str, start: str | Path, loss: dict, args: argparse.Namespace) -> tuple[Path, float]:
    """Train through a recipe file; returns (final model folder, seconds). Reuses a finished run."""
    from embedtrain.schema import load_recipe
    from embedtrain.api import train

    run_dir = args.out / "runs" / name
    final = run_dir / "final"
    timing = run_dir / "seconds.txt"
    if final.is_dir() and timing.is_file() and not args.force:
        return final, float(timing.read_text())
    recipe = {
        "model": {"name_or_path": str(start), "max_seq_length": 128},
        "datasets": [{"name": "stsb", "path": str(args.data_dir / "stsb_train.json"), "format": "scored_pairs"}],
        "loss": loss,
        "training": {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                     "learning_rate": args.lr, "warmup_steps": 0.1, "logging_steps": 50,
                     "save_strategy": "no"},
        "output_dir": str(run_dir),
        "seed": args.seed,
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
    scorer = StsScorer(args.data_dir, args.sickr_pairs, args.seed)
    checked = False

    def save(method: str) -> None:
        """Write this method's entry, keeping what a concurrent run (the other part) wrote meanwhile."""
        results_path.parent.mkdir(parents=True, exist_ok=True)
        current = json.loads(results_path.read_text()) if results_path.is_file() else {}
        current[method] = results[method]
        tmp = results_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(current, indent=2) + "\n")
        tmp.replace(results_path)

    whole_model = {
        "base": None,
        "plain": cosent(),
        "2dmse": {"name": "matryoshka2d", "params": {"kl_weight": 1.0, "kl_temperature": 0.05}, "inner": cosent()},
        "starbucks": {"name": "starbucks", "params": {"kl_weight": 1.0, "kl_temperature": 0.05}, "inner": cosent()},
    }
    for method in [m for m in args.methods if m in whole_model]:
        if whole_model[method] is None:
            model_dir, seconds = base_path, 0.0
        else:
            model_dir, seconds = train_model(method, base_path, whole_model[method], args)
        model = load_model(model_dir, device="cpu")
        cells = {f"{layer},{dim}": v for (layer, dim), v in scorer.scores(model, args.layers, args.dims).items()}
        if not checked:  # one truncated cell through a real truncated_copy and the evaluator
            layer, dim = min(args.layers), min(args.dims)
            cross_check(truncated_copy(model, layers=layer), scorer, dim, cells[f"{layer},{dim}"]["STSb"])
            checked = True
        results[method] = {"cells": cells, "train_seconds": seconds}
        save(method)
        logger.info("%s: %s", method, {k: round(v["STSb"], 2) for k, v in cells.items()})

    if "separate" in args.methods:
        cells = results.get("separate", {}).get("cells", {})
        seconds_total = results.get("separate", {}).get("train_seconds", {})
        base_model = load_model(base_path, device="cpu")
        full_dim, full_layers = base_model.get_embedding_dimension(), num_layers(base_model)
        for layers in args.layers:
            start = args.out / "runs" / f"minilm-{layers}l" if layers < full_layers else base_path
            if not (Path(start) / "modules.json").is_file():
                export_small_model(base_path, start, layers=layers, overwrite=True)
            for dim in args.dims:
                key = f"{layers},{dim}"
                loss = cosent() if dim == full_dim else {"name": "matryoshka", "params": {"dims": [dim]},
                                                         "inner": cosent()}
                if layers == full_layers and dim == full_dim:  # the full-size "small model" is the plain run
                    model_dir, seconds = train_model("plain", base_path, cosent(), args)
                else:
                    model_dir, seconds = train_model(f"separate-{layers}l-{dim}d", start, loss, args)
                model = load_model(model_dir, device="cpu")
                cells[key] = scorer.scores(model, [num_layers(model)], [dim])[(num_layers(model), dim)]
                seconds_total[key] = seconds
                results["separate"] = {"cells": cells, "train_seconds": seconds_total}
                save("separate")
                logger.info("separate %s: %.2f", key, cells[key]["STSb"])


# -- report -----------------------------------------------------------------------------------------
def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((args.out / "results.json").read_text())
    methods = [m for m in METHODS if m in results]
    cells = [(layer, dim) for layer in args.layers for dim in args.dims]
    lines = []
    for task in ("STSb", "SICK-R"):
        lines += [f"#### {task} test, cosine Spearman x 100", "",
                  "| layers | dims | " + " | ".join(LABELS[m] for m in methods) + " |",
                  "|---:|---:|" + "---:|" * len(methods)]
        for layer, dim in cells:
            values = [results[m]["cells"].get(f"{layer},{dim}", {}).get(task) for m in methods]
            trained = [v for m, v in zip(methods, values) if v is not None and m != "base"]
            best = max(trained) if trained else None
            row = [("**%.2f**" % v if v == best else "%.2f" % v) if v is not None else "-" for v in values]
            lines.append(f"| {layer} | {dim} | " + " | ".join(row) + " |")
        means = []
        for m in methods:
            vals = [results[m]["cells"].get(f"{layer},{dim}", {}).get(task) for layer, dim in cells]
            means.append("%.2f" % np.mean(vals) if all(v is not None for v in vals) else "-")
        lines.append("| mean | | " + " | ".join(means) + " |")
        lines.append("")
    timing = ["| method | training time (s) |", "|---|---:|"]
    for m in methods:
        t = results[m]["train_seconds"]
        total = sum(t.values()) if isinstance(t, dict) else t
        note = f" ({len(t)} cells; the full-size cell is the plain run)" if isinstance(t, dict) else ""
        timing.append(f"| {LABELS[m]} | {total:.0f}{note} |")
    (args.out / "table.md").write_text("\n".join(lines + timing) + "\n", encoding="utf-8")

    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.4), squeeze=False)
    values_all = [results[m]["cells"][k]["STSb"] for m in methods for k in results[m]["cells"]]
    vmin, vmax = min(values_all), max(values_all)
    for ax, m in zip(axes[0], methods):
        grid = np.full((len(args.layers), len(args.dims)), np.nan)
        for i, layer in enumerate(args.layers):
            for j, dim in enumerate(args.dims):
                v = results[m]["cells"].get(f"{layer},{dim}", {}).get("STSb")
                grid[i, j] = np.nan if v is None else v
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center",
                            color="white" if grid[i, j] < (vmin + vmax) / 2 else "black", fontsize=9)
        ax.set_xticks(range(len(args.dims)), [str(d) for d in args.dims])
        ax.set_yticks(range(len(args.layers)), [str(layer) for layer in args.layers])
        ax.set_xlabel("dims")
        if ax is axes[0][0]:
            ax.set_ylabel("layers")
        ax.set_title(LABELS[m], fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="STSb test Spearman x 100")
    fig.suptitle("all-MiniLM-L6-v2 sub-networks (layers x dims) after each training method", fontsize=10)
    png = args.docs / "img" / "matryoshka_experiment.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80, bbox_inches="tight")
    print("\n".join(lines + timing))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args()
    if not args.report:
        run(args)
    report(args)


if __name__ == "__main__":
    main()
