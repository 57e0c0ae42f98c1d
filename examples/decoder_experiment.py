"""SmolLM2-135M-Instruct as an embedder (docs/decoder.md): zero-shot pooling x attention, then a LoRA fine-tune.

Steps (each one command, so every run can go through a CPU-slot wrapper on its own)::

    python examples/decoder_experiment.py subsets  --data-dir DATA --out OUT [--pairs 250]
    python examples/decoder_experiment.py zeroshot --out OUT --pooling mean --attention causal [--instructions]
    python examples/decoder_experiment.py finetune --out OUT --seed 1 [--name NAME] [--set key=value ...]
    python examples/decoder_experiment.py reference --out OUT --name all-MiniLM-L6-v2
    python examples/decoder_experiment.py table    --out OUT

``subsets`` writes a task-config file with a seeded random sample of ``--pairs`` test pairs of each of the five
local STS tasks (STSBenchmark, SICK-R, STS12, STS13, STS14), reusing mteb's own task classes (``mteb_task``),
so the scores are mteb's cosine Spearman on fewer pairs: on a shared 2-core CPU, SmolLM2 encodes only a few
texts a second, and the full five tasks (22.6k distinct texts) take hours per model.

``zeroshot`` builds the untrained embedder with the given pooling and attention
(:func:`embedtrain.models.decoder.build_decoder_embedder`), saves it and evaluates it with the harness
(:func:`embedtrain.api.evaluate`); ``finetune`` trains ``recipes/decoder_lora.yaml`` (CoSENT on STS Benchmark
*train*, LoRA, last-token pooling, bidirectional attention; ``--set`` overrides recipe keys) with one seed and
evaluates the final model the same way; ``table`` prints every score as markdown, with mean +- std over the
seeds of a fine-tune.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "decoder_lora.yaml"
MODEL = "SmolLM2-135M-Instruct"
#: The five local STS tasks: task name -> file in the data directory.
TASKS = {"STSBenchmark": "stsb_test.json", "SICK-R": "sickr_test.json", "STS12": "STS12_test.json",
         "STS13": "STS13_test.json", "STS14": "STS14_test.json"}


def read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def subsets(data_dir: Path, out: Path, pairs: int, seed: int = 0) -> Path:
    """A task-config file with ``pairs`` random test pairs of each STS task (mteb's task classes)."""
    folder = out / "eval_subsets"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name, file in TASKS.items():
        rows = read_rows(data_dir / file)
        sample = random.Random(seed).sample(rows, min(pairs, len(rows)))
        target = folder / f"{name}.jsonl"
        target.write_text("".join(json.dumps(r) + "\n" for r in sample), encoding="utf-8")
        tasks.append({"name": f"{name}-{pairs}", "mteb_task": name, "files": {"test": target.name}})
    config = folder / "tasks.yaml"
    config.write_text(yaml.safe_dump({"data_dir": ".", "tasks": tasks}, sort_keys=False), encoding="utf-8")
    return config


def task_config(out: Path) -> tuple[Path, list[str]]:
    config = out / "eval_subsets" / "tasks.yaml"
    names = [t["name"] for t in yaml.safe_load(config.read_text(encoding="utf-8"))["tasks"]]
    return config, names


def evaluate(model: Path | str, out: Path, eval_dir: Path | None = None) -> dict[str, float]:
    from embedtrain.api import evaluate as run_eval

    config, names = task_config(out)
    eval_dir = eval_dir or Path(model) / "eval"
    start = time.perf_counter()
    report = run_eval(model, tasks=names, task_configs=[config], output=eval_dir, show_progress=False, batch_size=32)
    (eval_dir / "eval_seconds.json").write_text(json.dumps(round(time.perf_counter() - start)))
    return {name: round(score.value, 2) for name, score in report.summary.scores.items()}  # cosine Spearman x 100


def zeroshot(out: Path, pooling: str, attention: str, max_seq_length: int, instructions: bool = False
             ) -> dict[str, float]:
    """The untrained embedder; ``instructions`` saves embedtrain's default e5-style instruction prompts per MTEB
    task type in the checkpoint (the harness then prefixes every STS text with the STS instruction)."""
    from embedtrain.models.decoder import build_decoder_embedder
    from embedtrain.models.instructions import instruction_prompts
    from embedtrain.models.resolve import resolve_model_path
    from embedtrain.schema import InstructionsConfig

    model = build_decoder_embedder(resolve_model_path(MODEL), device="cpu", max_seq_length=max_seq_length,
                                   pooling=pooling, bidirectional=attention == "bidirectional")
    if instructions:
        model.prompts = instruction_prompts(InstructionsConfig())
    folder = out / (f"zeroshot-{pooling}-{attention}" + ("-instruct" if instructions else ""))
    model.save(str(folder))
    return evaluate(folder, out)


def reference(out: Path, name: str) -> dict[str, float]:
    """A packaged encoder (all-MiniLM-L6-v2) on the same task subsets, for scale."""
    return evaluate(name, out, out / f"reference-{name}" / "eval")


def finetune(out: Path, seed: int, extra: list[str], name: str = "finetune") -> dict[str, float]:
    from embedtrain.api import train

    folder = out / f"{name}-seed{seed}"
    overrides = [f"seed={seed}", f"output_dir={folder}", *extra]
    start = time.perf_counter()
    result = train(RECIPE, overrides, overwrite=True)
    seconds = round(time.perf_counter() - start)
    scores = evaluate(result.final_dir, out)
    (folder / "train_seconds.json").write_text(json.dumps({"train_seconds": seconds, "steps": result.global_step,
                                                           "overrides": overrides}), encoding="utf-8")
    return scores


def table(out: Path) -> str:
    _, names = task_config(out)
    rows: dict[str, list[dict[str, float]]] = {}
    for file in sorted(out.glob("*/eval/scores.json")) + sorted(out.glob("*/final/eval/scores.json")):
        run = file.parts[len(out.parts)]  # the harness's summary: cosine Spearman x 100 per task
        group = run.rsplit("-seed", 1)[0]
        rows.setdefault(group, []).append({k: v["value"] for k, v in json.loads(file.read_text())["scores"].items()})
    lines = ["| model | n | " + " | ".join(names) + " | mean |", "|---" * (len(names) + 3) + "|"]
    for group, runs in rows.items():
        cells = []
        for name in [*names, "mean"]:
            values = [statistics.fmean(r[n] for n in names) if name == "mean" else r[name] for r in runs]
            mean = statistics.fmean(values)
            cells.append(f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}")
        lines.append(f"| {group} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["subsets", "zeroshot", "finetune", "reference", "table"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=250)
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--attention", choices=["causal", "bidirectional"], default="causal")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instructions", action="store_true", help="zeroshot: save instruction prompts per task type")
    parser.add_argument("--set", action="append", default=[], help="recipe override for finetune (key=value)")
    parser.add_argument("--name", default="finetune",
                        help="finetune: run folder prefix (<name>-seed<N>); reference: the packaged model's name")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(1)
    if args.step == "subsets":
        print(subsets(args.data_dir, args.out, args.pairs))
    elif args.step == "zeroshot":
        print(zeroshot(args.out, args.pooling, args.attention, args.max_seq_length, args.instructions))
    elif args.step == "reference":
        print(reference(args.out, args.name))
    elif args.step == "finetune":
        print(finetune(args.out, args.seed, args.set, args.name))
    else:
        print(table(args.out))


if __name__ == "__main__":
    main()
