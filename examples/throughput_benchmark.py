"""Throughput benchmark: stock sentence-transformers training vs embedtrain on the same job, in one run.

For each regime the same model, data, loss, batch size, learning rate and sampler (no duplicates) are
trained by

* ``stock fp32`` - ``SentenceTransformerTrainer`` with default arguments,
* ``stock bf16`` - the same with ``bf16=True`` (stock's best setting on hardware with native bf16; the
  faster of the two stock runs is the *anchor*),
* ``embedtrain`` - a recipe through embedtrain's own training path (``train.runner.prepare`` ->
  ``ContrastiveMode.build_trainer``), with its default ``speed:`` settings,

interleaved (stock fp32, stock bf16, embedtrain, stock fp32, ...) and repeated, so a shared machine's load
hits all of them alike; medians are reported. Regimes:

``short_pairs``  STS Benchmark train pairs, MNRL, batch 64, max_seq_length 128
``query_passage`` SciFact (query, title + abstract) pairs from its qrels, MNRL, batch 32, max_seq_length 256
``gradcache``    cached MNRL (mini-batch 32), batch 4096 on CPU / 65536 on a GPU, max_seq_length 128, on STSb
                 train pairs, SICK, STS12-14 and consecutive-sentence pairs of SciFact abstracts
``mining``       embedtrain alone on mined STSb hard negatives (MNRL, batch 64): without ``mining.dynamic``,
                 with it (reusing the loss's similarities, the default) and with re-encoding; reports the
                 re-mining overhead in % of training time
``encode``       inference: stock ``model.encode`` (fp32) vs embedtrain's encoding for mining and evaluation
                 (``encode_texts(..., precision=auto)``, what ``embedtrain eval --precision auto`` and
                 ``embedtrain mine --precision auto`` run) on SciFact title + abstract texts, batch 32

samples/s counts training rows (pairs) per second of optimizer steps after the warm-up steps; peak memory is
the peak resident memory of the process during the run (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).
The last lines are ``speedup <regime> <ratio>``: embedtrain's median samples/s over the anchor's.

    OMP_NUM_THREADS=2 python examples/throughput_benchmark.py --data-dir ../shared/data --out runs/throughput
    python examples/throughput_benchmark.py --quick          # seconds: tiny random model and data
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- measuring ---------------------------------------------------------------------------------------------
class StepTimer(TrainerCallback):
    """Wall time of the optimizer steps after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if self.warmup == 0:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        elif state.global_step > self.warmup:
            self.end = time.perf_counter()
            self.steps = state.global_step - self.warmup


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or the process's resident set (sampled)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())


class TimedCollator:
    """Wraps a data collator and adds up the time spent in it (tokenisation)."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.seconds = 0.0

    def __call__(self, features):
        t = time.perf_counter()
        try:
            return self.collator(features)
        finally:
            self.seconds += time.perf_counter() - t

    def __getattr__(self, name):  # valid_label_columns, prompts... of the wrapped collator
        return getattr(self.collator, name)


@dataclass
class Measurement:
    samples_per_s: float
    peak_mib: float
    data_share: float
    extra: dict = field(default_factory=dict)


# -- data ----------------------------------------------------------------------------------------------------
def stsb_pairs(data_dir: Path) -> list[tuple[str, str]]:
    rows = json.loads((data_dir / "stsb_train.json").read_text(encoding="utf-8"))
    return [(r["sentence1"], r["sentence2"]) for r in rows]


def scifact_pairs(data_dir: Path) -> list[tuple[str, str]]:
    src = data_dir / "scifact"
    corpus = {}
    for line in (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        corpus[d["_id"]] = f"{d.get('title', '')} {d['text']}".strip()
    queries = {json.loads(x)["_id"]: json.loads(x)["text"]
               for x in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines()}
    lines = (src / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(queries[q], corpus[d]) for q, d, _ in (x.split("\t") for x in lines if x.strip())]


def large_pool(data_dir: Path, n: int) -> list[tuple[str, str]]:
    """``n`` distinct pairs: STSb train, SICK, STS12-14, then consecutive sentences of SciFact abstracts."""
    pairs: dict[tuple[str, str], None] = dict.fromkeys(stsb_pairs(data_dir))
    for name in ("sickr_test.json", "STS12_test.json", "STS13_test.json", "STS14_test.json"):
        path = data_dir / name
        if path.exists():
            pairs.update(dict.fromkeys((r["sentence1"], r["sentence2"])
                                       for r in json.loads(path.read_text(encoding="utf-8"))))
    for line in (data_dir / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if len(pairs) >= n:
            break
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s.strip()) > 20]
        pairs.update(dict.fromkeys(zip(sentences, sentences[1:])))
    seen: set[str] = set()
    unique = []
    for a, b in pairs:  # the no-duplicates sampler needs every text once per batch, in either column
        if a not in seen and b not in seen and a != b:
            seen.update((a, b))
            unique.append((a, b))
    return unique[:n]


def tiny_pairs(n: int, seed: int, long: bool = False) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    return [(text(rng.randint(2, 12)), text(rng.randint(20, 40) if long else rng.randint(2, 14))) for _ in range(n)]


def write_pairs(pairs: list[tuple[str, str]], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for a, b in pairs:
            fh.write(json.dumps({"anchor": a, "positive": b}) + "\n")
    return path


# -- one training run ----------------------------------------------------------------------------------------
@dataclass
class Regime:
    name: str
    pairs: list[tuple[str, str]]
    batch: int
    max_seq_length: int
    loss: str = "mnrl"
    mini_batch_size: int = 32
    warmup: int = 1
    steps: int = 4
    data_file: Path | None = None
    hard_negatives: Path | None = None   # mining regime: a mined file
    num_negatives: int = 0


def _common_training(regime: Regime, out: Path, seed: int) -> dict:
    return {"per_device_train_batch_size": regime.batch, "max_steps": regime.warmup + regime.steps,
            "learning_rate": 2e-5, "warmup_steps": 0, "logging_steps": 10_000, "save_strategy": "no",
            "report_to": "none", "dataloader_drop_last": True, "disable_tqdm": True}


def run_stock(model_path: str, regime: Regime, out: Path, seed: int, bf16: bool, device: str) -> Measurement:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(model_path, device=device, local_files_only=True)
    model.max_seq_length = regime.max_seq_length
    data = Dataset.from_dict({"anchor": [a for a, _ in regime.pairs], "positive": [b for _, b in regime.pairs]})
    loss = (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=regime.mini_batch_size)
            if regime.loss == "cached_mnrl" else losses.MultipleNegativesRankingLoss(model))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), seed=seed, bf16=bf16, use_cpu=device == "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES, **_common_training(regime, out, seed))
    timer = StepTimer(regime.warmup)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss, callbacks=[timer])
    return _train(trainer, timer, regime, device)


def embedtrain_recipe(model_path: str, regime: Regime, out: Path, seed: int, *, mining: dict | None = None,
                      speed: dict | None = None) -> Path:
    if regime.hard_negatives is not None:
        dataset = {"name": "data", "path": str(regime.hard_negatives), "format": "hard_negatives",
                   "num_negatives": regime.num_negatives}
        if mining is not None:
            dataset["mining"] = {"dynamic": mining}
    else:
        dataset = {"name": "data", "path": str(regime.data_file), "format": "pairs"}
    params = {"mini_batch_size": regime.mini_batch_size} if regime.loss == "cached_mnrl" else {}
    recipe = {"model": {"name_or_path": model_path, "max_seq_length": regime.max_seq_length},
              "datasets": [dataset], "loss": {"name": regime.loss, "params": params},
              "training": _common_training(regime, out, seed), "output_dir": str(out), "seed": seed}
    if speed:
        recipe["speed"] = speed
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run_embedtrain(model_path: str, regime: Regime, out: Path, seed: int, device: str, *,
                   mining: dict | None = None, speed: dict | None = None) -> Measurement:
    from embedtrain.schema import load_recipe
    from embedtrain.train.runner import prepare

    recipe = load_recipe(embedtrain_recipe(model_path, regime, out, seed, mining=mining, speed=speed))
    mode = prepare(recipe)
    timer = StepTimer(regime.warmup)
    trainer = mode.build_trainer(mode.training_args(), [timer], None)
    measurement = _train(trainer, timer, regime, device)
    history = []
    for miner in getattr(mode, "miners", []):
        history.extend(miner[1].table.history)
    if history:
        measurement.extra["mining_seconds"] = sum(r["seconds"] for r in history)
        measurement.extra["rounds"] = len(history)
        measurement.extra["reused"] = sum(r.get("reused", 0) for r in history)
        measurement.extra["encoded"] = sum(r.get("encoded", 0) for r in history)
        measurement.extra["refreshed"] = sum(r["refreshed"] for r in history)
    return measurement


def _train(trainer, timer: StepTimer, regime: Regime, device: str) -> Measurement:
    collator = TimedCollator(trainer.data_collator)
    trainer.data_collator = collator
    with PeakMemory(device) as memory:
        trainer.train()
    seconds = (timer.end or 0.0) - (timer.start or 0.0)
    if timer.steps <= 0 or seconds <= 0:
        raise RuntimeError(f"{regime.name}: no timed steps (warmup {regime.warmup}, steps {regime.steps})")
    return Measurement(regime.batch * timer.steps / seconds, memory.peak / 2**20,
                       collator.seconds / max(seconds, 1e-9))


# -- the benchmark ------------------------------------------------------------------------------------------
def build_regimes(args, device: str, workdir: Path) -> list[Regime]:
    quick = args.quick
    regimes = []
    wanted = set(args.regimes)
    if "short_pairs" in wanted:
        pairs = tiny_pairs(64, 1) if quick else stsb_pairs(args.data_dir)
        regimes.append(Regime("short_pairs", pairs, 8 if quick else 64, 32 if quick else 128,
                              warmup=1 if quick else 2, steps=1 if quick else args.steps))
    if "query_passage" in wanted:
        pairs = tiny_pairs(64, 2, long=True) if quick else scifact_pairs(args.data_dir)
        regimes.append(Regime("query_passage", pairs, 4 if quick else 32, 48 if quick else 256,
                              warmup=1, steps=1 if quick else max(2, args.steps // 2)))
    if "gradcache" in wanted:
        batch = 32 if quick else (args.gradcache_batch or (65536 if device == "cuda" else 4096))
        pairs = tiny_pairs(96, 3) if quick else large_pool(args.data_dir, batch)
        if len(pairs) < batch:
            print(f"note: gradcache regime has only {len(pairs)} distinct pairs; batch {batch} -> {len(pairs)}")
            batch = len(pairs)
        regimes.append(Regime("gradcache", pairs, batch, 32 if quick else 128, loss="cached_mnrl",
                              mini_batch_size=8 if quick else 32, warmup=0, steps=1))
    for r in regimes:
        r.data_file = write_pairs(r.pairs, workdir / f"{r.name}.jsonl")
    return regimes


def mine_for_benchmark(args, model_path: str, device: str, workdir: Path) -> Path:
    from embedtrain.mining.offline import run_mining
    from embedtrain.schema.mining import OfflineMiningConfig

    pairs = tiny_pairs(64, 4) if args.quick else stsb_pairs(args.data_dir)[:args.mining_rows]
    source = write_pairs(pairs, workdir / "mining_pairs.jsonl")
    cfg = OfflineMiningConfig(model=model_path, input=str(source), output=str(workdir / "mined.jsonl"),
                              num_negatives=3, candidates=12, range_min=2, range_max=40, batch_size=64,
                              max_seq_length=32 if args.quick else 128, device=device)
    run_mining(cfg)
    return workdir / "mined.jsonl"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="Model folder or packaged name.")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--regimes", nargs="+",
                        default=["short_pairs", "query_passage", "gradcache", "mining", "encode"],
                        choices=["short_pairs", "query_passage", "gradcache", "mining", "encode"])
    parser.add_argument("--encode-texts", type=int, default=600, help="SciFact texts encoded per encode run.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved repetitions (medians reported).")
    parser.add_argument("--gradcache-repeats", type=int, default=2, help="Repetitions of the (long) GradCache regime.")
    parser.add_argument("--gradcache-batch", type=int, default=None,
                        help="Batch of the GradCache regime (default: 4096 on CPU, 65536 on a GPU).")
    parser.add_argument("--steps", type=int, default=8, help="Timed steps per run (query_passage: half).")
    parser.add_argument("--mining-rows", type=int, default=2560, help="STSb pairs mined for the mining regime.")
    parser.add_argument("--mining-steps", type=int, default=40)
    parser.add_argument("--every-steps", type=int, default=10, help="mining.dynamic.every_steps in the mining regime.")
    parser.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Also run embedtrain with these speed: settings (e.g. attention_dropout=0.0); "
                             "not in the gradcache regime.")
    parser.add_argument("--out", type=Path, default=None, help="Folder for results.json (default: a temp folder).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="Smoke test: tiny random model and data, seconds.")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "sentence_transformers", "embedtrain", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from embedtrain.models.precision import choose_precision
    from embedtrain.models.resolve import resolve_model_path

    device = "cuda" if torch.cuda.is_available() else "cpu"
    workdir = Path(tempfile.mkdtemp(prefix="throughput_"))
    if args.quick:
        from embedtrain.testing import build_tiny_model

        model_path = str(build_tiny_model(workdir / "tiny_model"))
        args.repeats, args.gradcache_repeats, args.mining_steps, args.every_steps = 1, 1, 4, 2
    else:
        model_path = str(resolve_model_path(args.model))
    precision = choose_precision("auto", device)
    stock_best_bf16 = precision.autocast  # stock's bf16=True is only worth trying where bf16 is native
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device == 'cuda' else 'CPU cores'}), torch threads {torch.get_num_threads()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"model {args.model if not args.quick else 'tiny random BERT'}; embedtrain precision {precision.name} "
          f"({precision.reason})")
    extra_speed = {}
    for item in args.extra:
        key, _, value = item.partition("=")
        extra_speed[key] = yaml.safe_load(value)

    regimes = build_regimes(args, device, workdir)
    results: dict[str, dict] = {}
    run_id = 0

    def out_dir() -> Path:
        nonlocal run_id
        run_id += 1
        return workdir / f"run{run_id}"

    for regime in regimes:
        configs = {"stock fp32": lambda r: run_stock(model_path, r, out_dir(), args.seed, False, device)}
        if stock_best_bf16:
            configs["stock bf16"] = lambda r: run_stock(model_path, r, out_dir(), args.seed, True, device)
        configs["embedtrain"] = lambda r: run_embedtrain(model_path, r, out_dir(), args.seed, device)
        if extra_speed and regime.name != "gradcache":  # the long GradCache regime runs the defaults only
            configs["embedtrain +" + ",".join(args.extra)] = (
                lambda r: run_embedtrain(model_path, r, out_dir(), args.seed, device, speed=extra_speed))
        repeats = args.gradcache_repeats if regime.name == "gradcache" else args.repeats
        runs: dict[str, list[Measurement]] = {name: [] for name in configs}
        for rep in range(repeats):
            for name, fn in configs.items():
                m = fn(regime)
                runs[name].append(m)
                print(f"  {regime.name} #{rep + 1} {name}: {m.samples_per_s:.2f} samples/s, "
                      f"peak {m.peak_mib:.0f} MiB, data {100 * m.data_share:.1f}%", flush=True)
        results[regime.name] = summarize(regime, runs)

    if "mining" in args.regimes:
        results["mining"] = mining_regime(args, model_path, device, workdir, out_dir)
    if "encode" in args.regimes:
        results["encode"] = encode_regime(args, model_path, device)

    print_table(results, args, device)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    for name, r in results.items():
        if "speedup_vs_fp32" in r:
            print(f"speedup_vs_stock_fp32 {name} {r['speedup_vs_fp32']:.2f}")
    if "mining" in results:
        for run, c in results["mining"]["configs"].items():
            if run != "no mining":
                print(f"mining_overhead {run.replace(' ', '_')} {c['round_share_pct']:.1f}%")
    for name, r in results.items():
        if "speedup" in r:
            print(f"speedup {name} {r['speedup']:.2f}")


def summarize(regime: Regime, runs: dict[str, list[Measurement]]) -> dict:
    table = {name: {"samples_per_s": median([m.samples_per_s for m in ms]),
                    "runs": [round(m.samples_per_s, 3) for m in ms],
                    "peak_mib": median([m.peak_mib for m in ms]),
                    "data_share": median([m.data_share for m in ms])} for name, ms in runs.items()}
    stock = {k: v for k, v in table.items() if k.startswith("stock")}
    anchor = max(stock, key=lambda k: stock[k]["samples_per_s"])
    ours = table["embedtrain"]["samples_per_s"]
    return {"batch": regime.batch, "max_seq_length": regime.max_seq_length, "loss": regime.loss,
            "rows": len(regime.pairs), "configs": table, "anchor": anchor,
            "speedup": ours / table[anchor]["samples_per_s"],
            "speedup_vs_fp32": ours / table["stock fp32"]["samples_per_s"]}


def mining_regime(args, model_path: str, device: str, workdir: Path, out_dir) -> dict:
    mined = mine_for_benchmark(args, model_path, device, workdir)
    regime = Regime("mining", [], 8 if args.quick else 64, 32 if args.quick else 128, warmup=1,
                    steps=args.mining_steps, hard_negatives=mined, num_negatives=3)
    regime.pairs = [None] * sum(1 for _ in mined.open(encoding="utf-8"))  # only counted
    dynamic = {"every_steps": args.every_steps, "source": "candidates", "scope": "seen", "initial_from": "file"}
    configs = {
        "no mining": {},
        "mining (reuse)": {"mining": dynamic},
        "mining (re-encode)": {"mining": {**dynamic, "reuse_similarities": False}},
    }
    runs: dict[str, list[Measurement]] = {name: [] for name in configs}
    for rep in range(max(1, args.repeats - 1)):
        for name, kwargs in configs.items():
            m = run_embedtrain(model_path, regime, out_dir(), args.seed, device, **kwargs)
            runs[name].append(m)
            print(f"  mining #{rep + 1} {name}: {m.samples_per_s:.2f} samples/s, rounds {m.extra.get('rounds', 0)}, "
                  f"mining {m.extra.get('mining_seconds', 0):.1f}s, rows from the loss {m.extra.get('reused', 0)}, "
                  f"encoded {m.extra.get('encoded', 0)}, refreshed {m.extra.get('refreshed', 0)}", flush=True)
    base = median([m.samples_per_s for m in runs["no mining"]])
    out = {"batch": regime.batch, "steps": regime.steps, "every_steps": args.every_steps, "configs": {}}
    for name, ms in runs.items():
        rate = median([m.samples_per_s for m in ms])
        # overhead: extra wall time per trained row over the run without mining, as % of that run's time
        seconds = regime.steps * regime.batch / rate  # the timed steps
        out["configs"][name] = {"samples_per_s": rate, "runs": [round(m.samples_per_s, 3) for m in ms],
                                "overhead_pct": 100.0 * (base / rate - 1.0),
                                "round_share_pct": 100.0 * median([m.extra.get("mining_seconds", 0.0)
                                                                   for m in ms]) / seconds,
                                "mining_seconds": median([m.extra.get("mining_seconds", 0.0) for m in ms]),
                                "reused": median([m.extra.get("reused", 0) for m in ms]),
                                "encoded": median([m.extra.get("encoded", 0) for m in ms])}
    return out


def encode_regime(args, model_path: str, device: str) -> dict:
    from sentence_transformers import SentenceTransformer

    from embedtrain.mining.search import encode_texts
    from embedtrain.models.precision import choose_precision

    if args.quick:
        texts = [b for _, b in tiny_pairs(64, 5, long=True)]
    else:
        texts = [b for _, b in scifact_pairs(args.data_dir)]
        texts = list(dict.fromkeys(texts))[:args.encode_texts]
    model = SentenceTransformer(model_path, device=device, local_files_only=True)
    model.max_seq_length = 48 if args.quick else 256
    model.eval()
    fast = choose_precision("auto", device)
    runs: dict[str, list[float]] = {"stock encode fp32": [], f"embedtrain encode ({fast.name})": []}
    model.encode(texts[:32], batch_size=32)  # warm-up
    for rep in range(args.repeats):
        for name in runs:
            t = time.perf_counter()
            if name.startswith("stock"):
                model.encode(texts, batch_size=32, convert_to_numpy=True)
            else:
                encode_texts(model, texts, kind="plain", batch_size=32, precision=fast)
            if device == "cuda":
                torch.cuda.synchronize()
            runs[name].append(len(texts) / (time.perf_counter() - t))
            print(f"  encode #{rep + 1} {name}: {runs[name][-1]:.1f} texts/s", flush=True)
    table = {name: {"texts_per_s": median(v), "runs": [round(x, 2) for x in v]} for name, v in runs.items()}
    stock, ours = (table[n]["texts_per_s"] for n in runs)
    return {"texts": len(texts), "max_seq_length": model.max_seq_length, "configs": table, "speedup": ours / stock}


def print_table(results: dict, args, device: str) -> None:
    print()
    print(f"| regime | run | samples/s (median of runs) | peak MiB | data % | vs stock fp32 | vs anchor |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if name in ("mining", "encode"):
            continue
        fp32 = r["configs"]["stock fp32"]["samples_per_s"]
        anchor = r["configs"][r["anchor"]]["samples_per_s"]
        for run, c in r["configs"].items():
            tag = " (anchor)" if run == r["anchor"] else ""
            print(f"| {name} (batch {r['batch']}) | {run}{tag} | {c['samples_per_s']:.2f} ({', '.join(map(str, c['runs']))}) "
                  f"| {c['peak_mib']:.0f} | {100 * c['data_share']:.1f} | {c['samples_per_s'] / fp32:.2f}x "
                  f"| {c['samples_per_s'] / anchor:.2f}x |")
    if "mining" in results:
        r = results["mining"]
        print()
        print(f"| mining (batch {r['batch']}, every {r['every_steps']} steps) | samples/s | slowdown vs no mining | "
              "round seconds | rounds / training time | rows from the loss | rows encoded |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for run, c in r["configs"].items():
            print(f"| {run} | {c['samples_per_s']:.2f} ({', '.join(map(str, c['runs']))}) | {c['overhead_pct']:+.1f}% "
                  f"| {c['mining_seconds']:.1f} | {c['round_share_pct']:.1f}% | {c['reused']:.0f} | {c['encoded']:.0f} |")
    if "encode" in results:
        r = results["encode"]
        print()
        print(f"| encode ({r['texts']} SciFact texts, max_seq_length {r['max_seq_length']}, batch 32) | texts/s | ratio |")
        print("|---|---:|---:|")
        base = next(iter(r["configs"].values()))["texts_per_s"]
        for run, c in r["configs"].items():
            print(f"| {run} | {c['texts_per_s']:.1f} ({', '.join(map(str, c['runs']))}) | {c['texts_per_s'] / base:.2f}x |")
    print()


if __name__ == "__main__":
    main()
