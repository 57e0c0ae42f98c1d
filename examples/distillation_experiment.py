"""Distillation experiment: a 3-layer student cut from all-MiniLM-L6-v2, distilled vs trained contrastively.

Part A (embedding distillation): teacher all-MiniLM-L6-v2 (6 layers), student = its first 3 layers
(``model.keep_layers: 3``). ``embed_distill`` (Jasper weights: cosine 10, similarity matrix 200, relative ranking 20)
on unlabeled text (STSb train + dev sentences and Banking77 train texts; no evaluated split), versus ``mnrl`` on
the STSb-train paraphrase pairs (gold score >= 4, both directions) with the same student, learning rate and
about the same number of text encodings.

Part B (score distillation): rows mined from STSb train with all-MiniLM-L6-v2 (3 hard negatives each), then
``margin_mse`` on teacher scores from all-mpnet-base-v2 used as a bi-encoder scorer (no cross-encoder ships
offline; its cosines replace the miner's scores: ``distill.scorer.rescore``) versus ``mnrl`` on the same rows
(``hard_negatives``). Same 3-layer student.

Every run: 3 seeds; every local STS task through the offline MTEB harness (``embedtrain.api.evaluate``); the
per-pair cosine similarities the harness computed are kept so differences get a paired bootstrap 95% CI over
test pairs (seed-averaged). Encode speed: teacher vs student, sentences/s on the bundled 512 sentences.

Steps (each skips what is already done, so a killed run continues)::

    python examples/distillation_experiment.py prepare   --workdir runs/distill --data-dir /work/shared/data
    python examples/distillation_experiment.py baselines --workdir runs/distill --data-dir /work/shared/data
    python examples/distillation_experiment.py part-a    --workdir runs/distill --data-dir /work/shared/data
    python examples/distillation_experiment.py part-b    --workdir runs/distill --data-dir /work/shared/data \\
        --scorer /path/to/all-mpnet-base-v2
    python examples/distillation_experiment.py selfdistill-cost --workdir runs/distill --data-dir /work/shared/data
    python examples/distillation_experiment.py full-tasks --workdir runs/distill --data-dir /work/shared/data
    python examples/distillation_experiment.py report    --workdir runs/distill --data-dir /work/shared/data

``full-tasks`` scores Banking77 and SciFact (the other local task types) for every model trained so far, the
teacher and the untrained student (about 4-8 CPU-minutes per model; ``--labels`` picks some).
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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiment_stats (paired bootstrap, mean ± std)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("distill_experiment")
TEACHER = "all-MiniLM-L6-v2"
TASKS = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14"]
FULL_TASKS = ["Banking77Classification", "SciFact"]
TASK_FILES = {"STSBenchmark": "stsb_test.json", "SICK-R": "sickr_test.json", "STS12": "STS12_test.json",
              "STS13": "STS13_test.json", "STS14": "STS14_test.json"}
RUNS = {"a_distill": "A: embed_distill (unlabeled text)", "a_mnrl": "A: mnrl (STSb pairs)",
        "b_margin_mse": "B: margin_mse (mpnet scores)", "b_mnrl": "B: mnrl (same rows)"}


# ---------------------------------------------------------------------------------------------- data
def prepare(args) -> None:
    """texts.jsonl (unlabeled), pairs.jsonl (STSb-train paraphrases), mined.jsonl (hard negatives)."""
    w = args.workdir
    w.mkdir(parents=True, exist_ok=True)
    read = lambda name: json.loads((args.data_dir / name).read_text(encoding="utf-8"))
    train, dev, banking = read("stsb_train.json"), read("stsb_dev.json"), read("banking77_train.json")
    texts = list(dict.fromkeys([s for r in train + dev for s in (r["sentence1"], r["sentence2"])]
                               + [r["text"] for r in banking[:args.banking_texts]]))
    write_jsonl(w / "texts.jsonl", [{"text": t} for t in texts])
    pairs = [(r["sentence1"], r["sentence2"]) for r in train if float(r["score"]) >= 4.0]
    write_jsonl(w / "pairs.jsonl", [{"anchor": a, "positive": b} for x, y in pairs for a, b in ((x, y), (y, x))])
    mined_pairs = pairs[:args.mined_pairs]
    write_jsonl(w / "mine_input.jsonl", [{"anchor": a, "positive": b} for x, y in mined_pairs
                                         for a, b in ((x, y), (y, x))])
    corpus = dict.fromkeys(s for pair in mined_pairs for s in pair)
    for text in (s for r in train for s in (r["sentence1"], r["sentence2"])):
        if len(corpus) >= args.corpus_size:
            break
        corpus.setdefault(text)
    write_jsonl(w / "corpus.jsonl", [{"text": t} for t in corpus])
    logger.info("%d unlabeled texts, %d pair rows, %d rows to mine, corpus %d", len(texts), 2 * len(pairs),
                2 * len(mined_pairs), len(corpus))
    if not (w / "mined.jsonl").exists():
        from embedtrain import api
        from embedtrain.schema import OfflineMiningConfig

        cfg = OfflineMiningConfig(model=TEACHER, input=str(w / "mine_input.jsonl"), output=str(w / "mined.jsonl"),
                                  corpus=str(w / "corpus.jsonl"), num_negatives=3, range_min=5, range_max=100,
                                  relative_margin=0.05, batch_size=64, max_seq_length=128)
        result = api.mine(cfg)
        logger.info("mined %d rows: %s", len(result.rows), result.stats.summary())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------- runs
def recipe(run: str, seed: int, args) -> dict:
    w = args.workdir.resolve()
    common = {"model": {"name_or_path": TEACHER, "keep_layers": 3, "max_seq_length": 128},
              "output_dir": str(w / "runs" / f"{run}_s{seed}"), "seed": seed}
    training = {"learning_rate": args.learning_rate, "warmup_steps": 0.1, "logging_steps": 20,
                "save_strategy": "no"}
    if run == "a_distill":
        return {**common, "stage": "distill",
                "distill": {"teachers": [{"name": "minilm", "model": TEACHER, "batch_size": 64}],
                            "cache_dir": str(w / "cache")},
                "datasets": [{"name": "texts", "path": str(w / "texts.jsonl"), "format": "text"}],
                "loss": {"name": "embed_distill"},
                "training": {**training, "num_train_epochs": 1, "per_device_train_batch_size": 64}}
    if run == "a_mnrl":
        return {**common, "datasets": [{"name": "pairs", "path": str(w / "pairs.jsonl"), "format": "pairs"}],
                "loss": {"name": "mnrl", "params": {"temperature": 0.05}},
                "training": {**training, "num_train_epochs": args.mnrl_epochs, "per_device_train_batch_size": 64}}
    mined = {"name": "mined", "path": str(w / "mined.jsonl"), "num_negatives": 3}
    b_training = {**training, "num_train_epochs": args.b_epochs, "per_device_train_batch_size": 32}
    if run == "b_margin_mse":
        return {**common, "stage": "distill",
                "distill": {"scorer": {"kind": "bi_encoder", "model": str(args.scorer), "rescore": True,
                                       "batch_size": 64}, "cache_dir": str(w / "cache")},
                "datasets": [{**mined, "format": "scored_negatives"}],
                "loss": {"name": "margin_mse", "params": {"similarity": "cosine", "scale": 1.0}},
                "training": b_training}
    if run == "b_mnrl":
        return {**common, "datasets": [{**mined, "format": "hard_negatives"}],
                "loss": {"name": "mnrl", "params": {"temperature": 0.05}}, "training": b_training}
    raise ValueError(run)


def train_run(run: str, seed: int, args) -> None:
    label = f"{run}_s{seed}"
    info_path = args.workdir / "results" / f"{label}.train.json"
    final = args.workdir / "runs" / label / "final"
    if not info_path.exists():
        from embedtrain import api

        path = args.workdir / "recipes" / f"{label}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe(run, seed, args), sort_keys=False), encoding="utf-8")
        t = time.perf_counter()
        result = api.train(path, overwrite=True)
        info = {"steps": result.global_step, "train_seconds": round(time.perf_counter() - t, 1), "recipe": str(path)}
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        logger.info("%s: %s", label, info)
    evaluate(final, label, args)


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(model_dir, label: str, args) -> dict:
    """Offline MTEB scores (the harness) + the per-pair cosine similarities it computed, for the bootstrap."""
    out = args.workdir / "results" / f"{label}.json"
    if out.exists():
        return json.loads(out.read_text(encoding="utf-8"))
    from embedtrain import api
    from embedtrain.models import resolve

    seen: dict[str, np.ndarray] = {}
    original = resolve.load_model

    def recording_load(*a, **kw):  # keep every text's embedding as the harness computes it
        model = original(*a, **kw)
        for name in ("encode", "encode_query", "encode_document"):
            fn = getattr(model, name)

            def record(sentences, *b, _fn=fn, **k):
                emb = _fn(sentences, *b, **k)
                if isinstance(sentences, list) and all(isinstance(s, str) for s in sentences):
                    for s, e in zip(sentences, np.asarray(emb)):
                        seen[s] = e
                return emb

            setattr(model, name, record)
        return model

    resolve.load_model = recording_load
    try:
        t = time.perf_counter()
        report = api.evaluate(str(model_dir), tasks=TASKS, data_dir=args.data_dir,
                              output=args.workdir / "eval" / label, show_progress=False, batch_size=128)
        seconds = time.perf_counter() - t
    finally:
        resolve.load_model = original
    scores = {name: score.value for name, score in report.summary.scores.items()}
    sims = {}
    for task in TASKS:
        rows = json.loads((args.data_dir / TASK_FILES[task]).read_text(encoding="utf-8"))
        a = np.stack([seen[r["sentence1"]] for r in rows])
        b = np.stack([seen[r["sentence2"]] for r in rows])
        sims[task] = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        gold = np.array([float(r["score"]) for r in rows])
        mine = 100 * spearman(sims[task], gold)
        if abs(mine - scores[task]) > 0.01:  # the recorded embeddings must reproduce the harness's score
            raise RuntimeError(f"{label} {task}: per-pair Spearman {mine:.4f} != harness {scores[task]:.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.workdir / "results" / f"{label}.sims.npz", **sims)
    result = {"label": label, "scores": scores, "mean": float(np.mean([scores[t] for t in TASKS])),
              "eval_seconds": round(seconds, 1)}
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    logger.info("%s: %s", label, result)
    return result


def rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def model_of(label: str, args) -> str:
    """The model folder (or packaged name) of a report label."""
    if label == "teacher":
        return TEACHER
    if label == "student_untrained":
        return str(student_folder(args))
    return str(args.workdir / "runs" / label / "final")


def all_labels(args) -> list[str]:
    return ["teacher", "student_untrained"] + [f"{r}_s{s}" for r in RUNS for s in args.seeds]


def full_tasks(args) -> None:
    """Banking77 and SciFact for every model that exists (results/<label>.full.json)."""
    from embedtrain import api

    for label in args.labels or all_labels(args):
        out = args.workdir / "results" / f"{label}.full.json"
        model = model_of(label, args)
        if out.exists() or (label not in ("teacher", "student_untrained") and not Path(model).is_dir()):
            continue
        started = time.perf_counter()
        report = api.evaluate(model, tasks=FULL_TASKS, data_dir=args.data_dir,
                              output=args.workdir / "eval_full" / label, reuse=True, show_progress=False)
        result = {"label": label, "scores": {t: report.summary.scores[t].value for t in FULL_TASKS},
                  "eval_seconds": round(time.perf_counter() - started, 1)}
        out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        logger.info("%s: %s", label, result)


# ---------------------------------------------------------------------------------------------- baselines, speed
def student_folder(args) -> Path:
    """The untrained 3-layer student (first 3 layers of the teacher), saved once."""
    folder = args.workdir / "student_untrained"
    if not (folder / "modules.json").exists():
        from embedtrain.models.resolve import load_model
        from embedtrain.models.truncate import select_layers

        model = load_model(TEACHER, device="cpu")
        select_layers(model, 3)
        model.save(str(folder))
    return folder


def baselines(args) -> None:
    evaluate(TEACHER, "teacher", args)
    evaluate(student_folder(args), "student_untrained", args)
    out = args.workdir / "results" / "speed.json"
    if out.exists():
        return
    import torch

    from embedtrain.export import load_speed_sentences, measure_encode_speed
    from embedtrain.export.speed import default_speed_file
    from embedtrain.models.resolve import load_model

    torch.set_num_threads(1)
    texts = load_speed_sentences(default_speed_file(), 512)
    models = {"teacher": load_model(TEACHER, device="cpu"), "student": load_model(student_folder(args), device="cpu")}
    rounds = {name: [] for name in models}
    for _ in range(args.speed_rounds):  # alternate, so both see the same machine load
        for name, model in models.items():
            rounds[name].append(measure_encode_speed(model, texts, batch_size=32, repeats=3).sentences_per_second)
    speed = {name: {"sentences_per_second": float(np.median(v)), "rounds": v} for name, v in rounds.items()}
    ratios = [s / t for s, t in zip(rounds["student"], rounds["teacher"])]
    speed["speedup_median"] = float(np.median(ratios))
    speed["speedup_rounds"] = ratios
    speed["params"] = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(speed, indent=2), encoding="utf-8")
    logger.info("speed: %s", speed)


def selfdistill_cost(args) -> None:
    """Seconds per optimizer step of cosent vs self_distill(cosent) on all-MiniLM-L6-v2 (same batches)."""
    out = args.workdir / "results" / "selfdistill_cost.json"
    import torch
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    from embedtrain.losses.self_distill import SelfDistillLoss
    from embedtrain.models.resolve import load_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = json.loads((args.data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    model = load_model(TEACHER, device="cpu")
    model.max_seq_length = 128
    plain = CoSENTLoss(model)
    wrapped = SelfDistillLoss(model, CoSENTLoss(model), weight=1.0)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times: dict[str, list[float]] = {"cosent": [], "self_distill(cosent)": []}
    batch = 32
    for step in range(2 * args.cost_steps + 2):
        chunk = rows[(step * batch) % 4000:(step * batch) % 4000 + batch]
        features = [model.preprocess([r["sentence1"] for r in chunk]), model.preprocess([r["sentence2"] for r in chunk])]
        labels = torch.tensor([float(r["score"]) for r in chunk])
        name, loss = (("cosent", plain), ("self_distill(cosent)", wrapped))[step % 2]
        t = time.perf_counter()
        optim.zero_grad()
        loss(features, labels).backward()
        optim.step()
        if step >= 2:  # the first two are warm-up
            times[name].append(time.perf_counter() - t)
    result = {name: {"median_s": float(np.median(v)), "steps": len(v)} for name, v in times.items()}
    result["ratio"] = result["self_distill(cosent)"]["median_s"] / result["cosent"]["median_s"]
    result["batch"] = batch
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    logger.info("self-distillation cost: %s", result)


# ---------------------------------------------------------------------------------------------- report
def load(args, label: str) -> tuple[dict, dict[str, np.ndarray]] | None:
    path = args.workdir / "results" / f"{label}.json"
    if not path.exists():
        return None
    with np.load(args.workdir / "results" / f"{label}.sims.npz") as data:
        return json.loads(path.read_text(encoding="utf-8")), {k: data[k] for k in data.files}


def sts_items(sims: dict[str, np.ndarray], gold: dict[str, np.ndarray]) -> dict[str, dict]:
    """One run's per-pair cosines as ``experiment_stats`` items (one per task)."""
    return {t: {"kind": "sts", "pred": sims[t], "gold": gold[t]} for t in TASKS}


def compare(xs: list[dict], ys: list[dict], resamples: int) -> dict[str, list[float]]:
    """Paired bootstrap over test pairs (``experiment_stats``) of (mean over X's seeds) - (mean over Y's seeds):
    per task ``[difference, low, high]``, and for the STS mean the same replicates averaged over the tasks."""
    from experiment_stats import bootstrap_differences

    out, boots = {}, []
    for i, task in enumerate(TASKS):
        diff, boot = bootstrap_differences([x[task] for x in xs], [y[task] for y in ys], resamples=resamples, seed=i)
        out[task] = [diff, *map(float, np.percentile(boot, [2.5, 97.5]))]
        boots.append(boot)
    mean_boot = np.mean(boots, axis=0)
    out["mean"] = [float(np.mean([out[t][0] for t in TASKS])), *map(float, np.percentile(mean_boot, [2.5, 97.5]))]
    return out


def report(args) -> None:
    from experiment_stats import mean_std

    data = {}
    for label in all_labels(args):
        loaded = load(args, label)
        if loaded is not None:
            data[label] = loaded
    gold = {t: np.array([float(r["score"]) for r in json.loads((args.data_dir / TASK_FILES[t]).read_text())])
            for t in TASKS}
    teacher_mean = data["teacher"][0]["mean"]
    lines = ["| model | seeds | " + " | ".join(TASKS) + " | STS mean | % of teacher |", "|---" * (len(TASKS) + 4) + "|"]

    def cell(values: list[float]) -> str:
        return mean_std(values) if len(values) > 1 else f"{values[0]:.2f}"

    def row(name: str, results: list[dict]) -> None:
        cells = [cell([r["scores"][t] if t != "mean" else r["mean"] for r in results]) for t in TASKS + ["mean"]]
        cells.append(cell([100 * r["mean"] / teacher_mean for r in results]))
        lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + " |")

    row("teacher all-MiniLM-L6-v2 (6 layers)", [data["teacher"][0]])
    row("student: first 3 layers, untrained", [data["student_untrained"][0]])
    groups = {"teacher": [data["teacher"]], "student_untrained": [data["student_untrained"]]}
    for run, name in RUNS.items():
        runs = [data[f"{run}_s{s}"] for s in args.seeds if f"{run}_s{s}" in data]
        if runs:
            groups[run] = runs
            row(name, [r[0] for r in runs])
    seed_lines = ["| run | " + " | ".join(TASKS) + " | STS mean |", "|---" * (len(TASKS) + 2) + "|"]
    for label, (result, _) in data.items():
        seed_lines.append(f"| {label} | " + " | ".join(f"{result['scores'][t]:.2f}" for t in TASKS)
                          + f" | {result['mean']:.2f} |")
    out = ["### STS, cosine Spearman x 100 (mean ± sample std over seeds)", "", *lines, "",
           "Every run:", "", *seed_lines, ""]
    full = {label: json.loads(p.read_text()) for label in all_labels(args)
            if (p := args.workdir / "results" / f"{label}.full.json").exists()}
    if full:  # the other local task types, per model group
        full_lines = ["| model | seeds | " + " | ".join(FULL_TASKS) + " |", "|---" * (len(FULL_TASKS) + 2) + "|"]
        names = {"teacher": "teacher all-MiniLM-L6-v2 (6 layers)", "student_untrained": "student, untrained", **RUNS}
        for group, name in names.items():
            runs = [full[k] for k in full if k == group or k.rsplit("_s", 1)[0] == group]
            if runs:
                full_lines.append(f"| {name} | {len(runs)} | " + " | ".join(
                    cell([r["scores"][t] for r in runs]) for t in FULL_TASKS) + " |")
        out += ["### Banking77 (accuracy x 100) and SciFact (nDCG@10 x 100), mean ± sample std over seeds", "",
                *full_lines, ""]
        from experiment_stats import seed_interval

        diff_lines = ["| comparison | " + " | ".join(FULL_TASKS) + " |", "|---" * (len(FULL_TASKS) + 1) + "|"]
        for x, y in (("a_distill", "a_mnrl"), ("b_margin_mse", "b_mnrl")):
            xs = [full[f"{x}_s{s}"] for s in args.seeds if f"{x}_s{s}" in full]
            ys = [full[f"{y}_s{s}"] for s in args.seeds if f"{y}_s{s}" in full]
            if len(xs) > 1 and len(ys) > 1:
                cells = [seed_interval([r["scores"][t] for r in xs], [r["scores"][t] for r in ys]) for t in FULL_TASKS]
                diff_lines.append(f"| {x} − {y} | " + " | ".join(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                                                                   for d, lo, hi in cells) + " |")
        if len(diff_lines) > 2:
            out += ["Differences, Welch 95% interval over seeds (per-item outputs of these tasks were not kept):", "",
                    *diff_lines, ""]
    comparisons = [("a_distill", "a_mnrl"), ("a_distill", "teacher"), ("a_mnrl", "teacher"),
                   ("a_distill", "student_untrained"), ("a_mnrl", "student_untrained"), ("b_margin_mse", "b_mnrl")]
    ci_lines = ["| comparison | " + " | ".join(TASKS) + " | STS mean |", "|---" * (len(TASKS) + 2) + "|"]
    cis = {}
    for x, y in comparisons:
        if x in groups and y in groups:
            items = lambda runs: [sts_items(sims, gold) for _, sims in runs]  # noqa: E731
            cis[f"{x} - {y}"] = ci = compare(items(groups[x]), items(groups[y]), args.resamples)
            ci_lines.append(f"| {x} − {y} | " + " | ".join(
                f"{ci[t][0]:+.2f} [{ci[t][1]:+.2f}, {ci[t][2]:+.2f}]" for t in TASKS + ["mean"]) + " |")
    out += [(f"### Differences, paired bootstrap 95% interval ({args.resamples} resamples of the test pairs; "
             "each side averaged over its seeds; the STS mean's interval averages the per-task replicates)"), "",
            *ci_lines, ""]
    speed_path = args.workdir / "results" / "speed.json"
    if speed_path.exists():
        speed = json.loads(speed_path.read_text())
        out += ["### Encode speed (sentences/s, 512 bundled sentences, batch 32, 1 thread; median of rounds)", "",
                (f"teacher {speed['teacher']['sentences_per_second']:.1f}, student "
                 f"{speed['student']['sentences_per_second']:.1f}, speed-up {speed['speedup_median']:.2f}x "
                 f"(per round: {', '.join(f'{r:.2f}' for r in speed['speedup_rounds'])}); parameters "
                 f"{speed['params']['teacher']:,} -> {speed['params']['student']:,}"), ""]
    cost_path = args.workdir / "results" / "selfdistill_cost.json"
    if cost_path.exists():
        cost = json.loads(cost_path.read_text())
        out += ["### Self-distillation cost per step (all-MiniLM-L6-v2, batch 32 pairs, 1 thread)", "",
                (f"cosent {cost['cosent']['median_s']:.3f} s, self_distill(cosent) "
                 f"{cost['self_distill(cosent)']['median_s']:.3f} s: x{cost['ratio']:.2f} "
                 f"(median of {cost['cosent']['steps']} steps each)"), ""]
    train_info = {}
    for path in sorted((args.workdir / "results").glob("*.train.json")):
        train_info[path.name.removesuffix(".train.json")] = json.loads(path.read_text())
    out += ["### Training runs (optimizer steps, wall seconds on the shared machine)", "",
            ", ".join(f"{k}: {v['steps']} steps {v['train_seconds']:.0f} s" for k, v in train_info.items()), ""]
    text = "\n".join(out)
    (args.workdir / "report.md").write_text(text, encoding="utf-8")
    (args.workdir / "report.json").write_text(json.dumps({"cis": cis, "train": train_info}, indent=2))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "baselines", "part-a", "part-b", "selfdistill-cost", "full-tasks",
                                         "report"])
    parser.add_argument("--workdir", type=Path, default=Path("runs/distill"))
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--scorer", type=Path, help="all-mpnet-base-v2 folder (part B's teacher scorer)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--banking-texts", type=int, default=3000)
    parser.add_argument("--mined-pairs", type=int, default=600)
    parser.add_argument("--corpus-size", type=int, default=5000)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--mnrl-epochs", type=int, default=3)
    parser.add_argument("--b-epochs", type=int, default=1)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--cost-steps", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--labels", nargs="*", default=None, help="full-tasks: only these models (e.g. a_distill_s1)")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.step == "prepare":
        prepare(args)
    elif args.step == "baselines":
        baselines(args)
    elif args.step in ("part-a", "part-b"):
        runs = ["a_distill", "a_mnrl"] if args.step == "part-a" else ["b_margin_mse", "b_mnrl"]
        if args.step == "part-b" and args.scorer is None:
            parser.error("part-b needs --scorer (the all-mpnet-base-v2 folder)")
        for seed in args.seeds:
            for run in runs:
                train_run(run, seed, args)
    elif args.step == "selfdistill-cost":
        selfdistill_cost(args)
    elif args.step == "full-tasks":
        full_tasks(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
