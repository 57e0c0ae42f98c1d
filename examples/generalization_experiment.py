"""Fine-tuning without forgetting: the four ways against plain fine-tuning, and the trade-off plot (issue 12).

all-MiniLM-L6-v2 fine-tuned on STS Benchmark train (the quickstart: CoSENT, 1 epoch, batch 16, lr 2e-5) in these
settings, each one recipe (docs/generalization.md):

* ``plain``: CoSENT alone (what forgets);
* ``merge_auto``: the plain run merged with its start model, the weight chosen automatically on STSb **dev** and
  agreement on general text (``embedtrain.api.merge_start``, the function the recipe's
  ``merge_with_start: {alpha: auto, dev: ...}`` calls after training: the same training is not run twice);
* ``self_distill``: the quickstart's loss (``self_distill`` weight 300, similarity term, trained pairs excluded);
* ``lora``: plain + ``model.lora`` (r 16, merged at save), lr 2e-4;
* ``mixing``: plain + general pairs scored by the start model (``data_prep/general_pairs.py``) as a second dataset,
  one general batch in three (``weight: 2`` / ``weight: 1``);

plus the WiSE-FT curve: the plain run merged with the start model at fixed alphas. Every model is scored on every
local STS task (offline MTEB harness); STSBenchmark is the target, the others were not trained on.

Run (heavy: about 5-10 CPU-minutes per training and 1.5 per evaluation on 2 cores; each step skips what is done;
``--full-tasks`` adds Banking77 and SciFact for every model, about 8-10 CPU-minutes more per model)::

    python examples/generalization_experiment.py --workdir runs/generalization --data-dir /work/shared/data \\
        --seeds 42,43,44 --settings plain,merge_auto,self_distill,lora,mixing --curve 0.1,0.3,0.5,0.7,0.9 \\
        --full-tasks --results runs/generalization/results.json --plot docs/img/generalization_tradeoff.png

Plot only, from collected results (the committed ones: docs/data/generalization_results.json)::

    python examples/generalization_experiment.py --plot-only docs/data/generalization_results.json \\
        --plot docs/img/generalization_tradeoff.png

The results file: ``start`` (scores), ``settings.<name>.runs`` (one entry per seed: ``scores`` per STS task,
``full_scores`` for Banking77 / SciFact with ``--full-tasks``, and for ``merge_auto`` the chosen ``alpha``),
``merge_curves`` (``points``: alpha -> scores, per seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("generalization_experiment")
REPO = Path(__file__).resolve().parents[1]
START = "all-MiniLM-L6-v2"
TASKS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14"]
TARGET, NOT_TRAINED = TASKS[0], TASKS[1:]
#: The other local task types (``--full-tasks``): where plain fine-tuning on STS forgets most.
FULL_TASKS = ["Banking77Classification", "SciFact"]
SETTINGS = {
    "plain": "full fine-tuning (CoSENT)",
    "merge_auto": "merge_with_start, alpha auto",
    "self_distill": "self_distill regularizer (weight 300)",
    "lora": "whole-model LoRA r=16, merged",
    "mixing": "mixing general pairs (1 batch in 3)",
}


# ------------------------------------------------------------------------------------------------- recipes
def base_recipe(seed: int, output_dir: Path) -> dict:
    """The quickstart recipe with absolute data paths and the plain CoSENT loss."""
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text(encoding="utf-8"))
    for ds in recipe["datasets"]:
        ds["path"] = str((REPO / "recipes" / ds["path"]).resolve())
    for ev in recipe.get("evaluators", []):
        ev["path"] = str((REPO / "recipes" / ev["path"]).resolve())
    recipe["loss"] = {"name": "cosent", "params": {"scale": 20.0}}
    recipe["generalization"] = {"enabled": False}  # scored below, the same way for every model
    recipe.update(seed=seed, output_dir=str(output_dir))
    return recipe


def setting_recipe(setting: str, seed: int, workdir: Path) -> dict:
    recipe = base_recipe(seed, workdir / f"{setting}_s{seed}")
    if setting == "self_distill":
        quickstart = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text(encoding="utf-8"))
        recipe["loss"] = quickstart["loss"]
    elif setting == "lora":
        recipe["model"]["lora"] = {"r": 16, "alpha": 32, "dropout": 0.05, "merge": True}
        recipe["training"]["learning_rate"] = 2.0e-4
    elif setting == "mixing":
        recipe["datasets"][0]["weight"] = 2
        recipe["datasets"].append({"name": "general", "path": str(general_pairs(workdir)), "format": "scored_pairs",
                                   "weight": 1})
    elif setting != "plain":
        raise SystemExit(f"unknown setting {setting!r}; choose from {sorted(SETTINGS)}")
    return recipe


def general_pairs(workdir: Path) -> Path:
    """General pairs from the bundled sentences, scored by the start model (once)."""
    out = workdir / "general_pairs.jsonl"
    if not out.exists():
        import importlib.util

        spec = importlib.util.spec_from_file_location("general_pairs", REPO / "data_prep" / "general_pairs.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(["--model", START, "--output", str(out), "--num-pairs", "3000"])
    return out


# --------------------------------------------------------------------------------------------- running
def scores_of(model: Path | str, data_dir: Path, tasks: list[str] = TASKS, output: Path | None = None
              ) -> dict[str, float]:
    """Main scores x100 of ``tasks`` (offline MTEB harness), kept in ``output`` (default ``<model>/eval``) and
    reused when the same weights were scored before."""
    from embedtrain import api

    report = api.evaluate(model, tasks=tasks, data_dir=data_dir, output=output or Path(model) / "eval", reuse=True,
                          show_progress=False)
    return {t: round(report.summary.scores[t].value, 2) for t in tasks}


def merged_with_start(seed: int, workdir: Path) -> tuple[Path, float]:
    """The plain run of ``seed`` merged with the start model, alpha chosen on STSb dev + general agreement."""
    from embedtrain import api

    out = workdir / f"mergeauto_s{seed}"
    record = out / "merge_start.json"
    if not record.exists():
        plain = train_setting("plain", seed, workdir)
        api.merge_start(plain, START, out, alpha="auto", dev=REPO / "examples" / "data" / "stsb" / "dev.jsonl",
                        overwrite=True)
    return out, float(json.loads(record.read_text())["alpha"])


def train_setting(setting: str, seed: int, workdir: Path) -> Path:
    from embedtrain import api

    final = workdir / f"{setting}_s{seed}" / "final"
    if not (final / "embedtrain_run.json").exists():
        recipe_path = workdir / f"{setting}_s{seed}.yaml"
        recipe_path.write_text(yaml.safe_dump(setting_recipe(setting, seed, workdir), sort_keys=False))
        api.train(recipe_path, overwrite=True)
    return final


def merge_curve(plain_final: Path, alphas: list[float], data_dir: Path) -> list[dict]:
    """The plain run merged with the start model at each alpha, scored (the WiSE-FT curve)."""
    from embedtrain.models.resolve import load_model
    from embedtrain.soup.merge_start import merge_with_start, weights_of

    start = weights_of(load_model(START, device="cpu"))
    points = []
    for alpha in alphas:
        folder = plain_final.parent / f"merged_{alpha:.2f}"
        if not (folder / "modules.json").exists():
            model = load_model(plain_final, device="cpu")
            merge_with_start(model, start, alpha=alpha)
            model.save(str(folder))
        points.append({"alpha": alpha, "scores": scores_of(folder, data_dir)})
    return points


def run(args) -> dict:
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    start_scores = scores_of(START, args.data_dir, output=workdir / "start_eval")
    results = {"description": "examples/generalization_experiment.py", "target": TARGET, "tasks": TASKS,
               "not_trained": NOT_TRAINED,
               "start": {"scores": start_scores},
               "settings": {s: {"label": SETTINGS[s], "runs": []} for s in args.settings}, "merge_curves": []}
    if args.full_tasks:
        results["full_tasks"] = FULL_TASKS
        results["start"]["full_scores"] = scores_of(START, args.data_dir, FULL_TASKS,
                                                         workdir / "start_eval_full")
    for seed in args.seeds:
        for setting in args.settings:
            if setting == "merge_auto":
                model, alpha = merged_with_start(seed, workdir)
                entry = {"seed": seed, "alpha": alpha}
            else:
                model, entry = train_setting(setting, seed, workdir), {"seed": seed}
            entry["scores"] = scores_of(model, args.data_dir)
            if args.full_tasks:
                entry["full_scores"] = scores_of(model, args.data_dir, FULL_TASKS, model / "eval_full")
            results["settings"][setting]["runs"].append(entry)
            logger.info("%s seed %d: %s", setting, seed, entry)
        if args.curve and "plain" in args.settings:
            points = merge_curve(workdir / f"plain_s{seed}" / "final", args.curve, args.data_dir)
            results["merge_curves"].append({"seed": seed, "points": points})
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")  # after every seed: a killed run keeps them
    return results


# -------------------------------------------------------------------------------------------- reporting
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def point(scores: dict[str, float], start: dict[str, float]) -> tuple[float, float]:
    """(target gain, mean change on the not-trained tasks) of one model."""
    return (scores[TARGET] - start[TARGET],
            statistics.mean(scores[t] - start[t] for t in NOT_TRAINED))


def curves_of(results: dict) -> list[dict]:
    curves = results.get("merge_curves")
    if curves is None and results.get("merge_curve"):
        curves = [results["merge_curve"]]
    return curves or []


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = results["start"]["scores"]
    full = results.get("full_tasks")
    fig, axes = plt.subplots(1, 2 if full else 1, figsize=(14, 5.4) if full else (7.5, 5.2), squeeze=False)
    ax = axes[0][0]
    for a in axes[0]:
        a.axhline(0, color="0.7", lw=0.8)
        a.axvline(0, color="0.7", lw=0.8)

    by_alpha: dict[float, list[tuple[float, float]]] = {}
    for curve in curves_of(results):
        for p in curve["points"]:
            if p.get("scores"):
                by_alpha.setdefault(float(p["alpha"]), []).append(point(p["scores"], start))
    if by_alpha:
        alphas = sorted(by_alpha)
        xs = [0.0] + [statistics.mean(x for x, _ in by_alpha[a]) for a in alphas]
        ys = [0.0] + [statistics.mean(y for _, y in by_alpha[a]) for a in alphas]
        n = min(len(v) for v in by_alpha.values())
        ax.plot(xs, ys, "-", color="tab:blue", alpha=0.5, marker=".", label=f"merge with start, fixed α (n={n})")
        for i, (a, x, y) in enumerate(zip(alphas, xs[1:], ys[1:])):
            ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(-8, 7) if i % 2 else (5, -12),
                        fontsize=8, color="tab:blue")
    markers = {"plain": ("s", "tab:red"), "merge_auto": ("D", "tab:blue"), "self_distill": ("*", "tab:green"),
               "lora": ("^", "tab:purple"), "mixing": ("v", "tab:orange")}
    for name, setting in results["settings"].items():
        runs = setting.get("runs") or []
        if not runs:
            continue
        marker, color = markers.get(name, ("o", None))
        style = dict(fmt=marker, color=color, ms=11 if marker == "*" else 7, capsize=3,
                     label=f"{SETTINGS.get(name, setting['label'])} (n={len(runs)})")
        pts = [point(r["scores"], start) for r in runs]
        (mx, sx), (my, sy) = _mean_std([p[0] for p in pts]), _mean_std([p[1] for p in pts])
        ax.errorbar(mx, my, xerr=sx, yerr=sy, **style)
        scored = [r for r in runs if r.get("full_scores")]
        if full and scored:  # the same x against the other task types
            other = [statistics.mean(r["full_scores"][t] - results["start"]["full_scores"][t] for t in full)
                     for r in scored]
            (fx, fsx), (fy, fsy) = _mean_std([point(r["scores"], start)[0] for r in scored]), _mean_std(other)
            axes[0][1].errorbar(fx, fy, xerr=fsx, yerr=fsy,
                                **{**style, "label": f"{SETTINGS.get(name, setting['label'])} (n={len(scored)})"})
    for i, a in enumerate(axes[0]):
        a.plot([0], [0], "ko", ms=5, label="start model (all-MiniLM-L6-v2)")
        a.set_xlabel(f"{TARGET} test: change vs start (cosine Spearman x100)")
        a.legend(fontsize=8, loc="lower right" if i == 0 else "center right")  # the right panel's losses sit low
        a.grid(alpha=0.3)
    ax.set_ylabel(f"mean change on not-trained STS tasks\n({', '.join(NOT_TRAINED)})")
    ax.set_title("Target gain vs change on the other STS tasks (mean ± std over seeds)", fontsize=11)
    if full:
        axes[0][1].set_ylabel(f"mean change on the other task types\n({', '.join(full)})")
        axes[0][1].set_title("Target gain vs change on classification and retrieval", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    logger.info("wrote %s", out)


def table(results: dict) -> str:
    """Markdown: mean ± std per task and setting (n = seeds), with the change of the mean vs the start model."""
    start = results["start"]["scores"]
    head = "| setting | n | " + " | ".join(TASKS) + " | mean not-trained |\n|---|---|" + "---|" * (len(TASKS) + 1)
    rows = [head, "| start model | - | " + " | ".join(f"{start[t]:.2f}" for t in TASKS)
            + f" | {statistics.mean(start[t] for t in NOT_TRAINED):.2f} |"]
    for setting in results["settings"].values():
        runs = setting.get("runs") or []
        if not runs:
            rows.append(f"| {setting['label']} | 0 | " + " | ".join("not measured" for _ in TASKS) + " | |")
            continue
        cells = []
        for t in [*TASKS, "mean"]:
            vals = [statistics.mean(r["scores"][x] for x in NOT_TRAINED) if t == "mean" else r["scores"][t]
                    for r in runs]
            ref = statistics.mean(start[x] for x in NOT_TRAINED) if t == "mean" else start[t]
            m, s = _mean_std(vals)
            cells.append(f"{m:.2f} ± {s:.2f} ({m - ref:+.2f})")
        rows.append(f"| {setting['label']} | {len(runs)} | " + " | ".join(cells) + " |")
    full = results.get("full_tasks")
    if full:  # the other task types, against the start model's published scores
        start_full = results["start"]["full_scores"]
        rows += ["", "| setting | n | " + " | ".join(full) + " |\n|---|---|" + "---|" * len(full),
                 "| start model | - | " + " | ".join(f"{start_full[t]:.2f}" for t in full) + " |"]
        for setting in results["settings"].values():
            runs = [r for r in setting.get("runs") or [] if r.get("full_scores")]
            if runs:
                cells = []
                for t in full:
                    m, s = _mean_std([r["full_scores"][t] for r in runs])
                    cells.append(f"{m:.2f} ± {s:.2f} ({m - start_full[t]:+.2f})")
                rows.append(f"| {setting['label']} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot-only", type=Path, default=None, metavar="RESULTS.json",
                        help="draw the plot (and print the table) from collected results; train nothing")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "generalization_tradeoff.png")
    parser.add_argument("--workdir", type=Path, default=Path("runs/generalization"))
    parser.add_argument("--data-dir", type=Path, default=None, help="the local benchmark data (STS test splits)")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--curve", default="0.1,0.3,0.5,0.7,0.9", help="fixed merge weights for the curve ('' = none)")
    parser.add_argument("--full-tasks", action="store_true",
                        help="also score Banking77 and SciFact for every model (~8-10 CPU-minutes each)")
    parser.add_argument("--results", type=Path, default=None, help="default: WORKDIR/results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.plot_only is not None:
        results = json.loads(args.plot_only.read_text(encoding="utf-8"))
    else:
        if args.data_dir is None:
            parser.error("--data-dir is needed to run the experiment (or give --plot-only RESULTS.json)")
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
        args.settings = [s for s in args.settings.split(",") if s]
        unknown = sorted(set(args.settings) - set(SETTINGS))
        if unknown:
            parser.error(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")
        args.curve = [float(a) for a in args.curve.split(",") if a]
        args.results = args.results or args.workdir / "results.json"
        results = run(args)
    plot(results, args.plot)
    print(table(results))


if __name__ == "__main__":
    main()
