"""Data at scale: ``embedtrain validate`` speed and time-to-first-step / peak RSS per rank with 2 processes.

For each size in ``--sizes`` (default 100k, 1M and 5M pairs) a synthetic pairs file with realistic lengths is
written (queries of 5-15 words, passages of 40-100 words: about 550 bytes a row, like MS MARCO), then:

1. ``validate``: ``embedtrain validate recipe.yaml`` in a fresh process with an empty data cache: wall time,
   rows/s of the preparation pass (read, vectorised checks, duplicate count, Arrow file written), peak RSS;
2. ``first step``: ``accelerate launch`` with 2 CPU processes (gloo) of ``embedtrain train`` on
   all-MiniLM-L6-v2, stopped after ``--steps`` optimizer steps (default 10): seconds from process start to the
   end of step 1, and peak RSS per rank over the steps (VmHWM, which counts the memory-mapped data pages a rank
   touched, and RssAnon, its private memory; the peak keeps rising after step 1, as longer batches come and
   the allocator's heap grows, so step 1 alone understates it), once with a cold cache (the main process
   prepares, the other waits and opens it) and once warm (both open the cache);
3. the anchor (unless ``--no-stock``): the same job on the stock ``SentenceTransformerTrainer`` (same model,
   loss with gathered negatives, batch size, no-duplicates sampler), data loaded the stock way
   (``datasets.load_dataset("json")``: datasets' Arrow cache, memory-mapped), cold and warm; the ratios
   stock / embedtrain are printed per size.

``--gradient-checkpointing`` trains both with gradient checkpointing (activations recomputed in the backward
pass): it lowers the per-rank floor that the trainer itself needs, whatever the data size.
``--recompute-attention`` sets embedtrain's ``speed.recompute_attention`` (only the attention probabilities are
recomputed; stock has no such setting).

``--malloc-stats`` splits each rank's peak (glibc only): a thread reads ``mallinfo2`` every 10 ms and keeps the
largest number of bytes the program had allocated and not freed (``malloc live``; tensors, Python objects larger
than 512 bytes), and the rank's RSS when training starts (libraries, model, data handles). What the peak holds
beyond the two is the allocator's slack (freed memory it has not returned) and small-object pools. The thread
takes the allocator's lock while it reads, so time figures of such a run are not the reference.

At ``--compare-size`` (default 100k) the same is measured for the previous implementation, which reads rows into
Python lists on every rank, and the ratios are printed: ``--old-ref c834e34`` (the commit before the Arrow data
path; its ``embedtrain`` package is extracted with ``git archive`` into the work folder) or ``--old-tree``, a copy
of that package's parent folder. A final table sums up every size. Figures depend on the machine and its load;
the ones in docs/scale.md were taken on a shared 2-core box. Big files are deleted after each size (check
``df -h`` first).

    python examples/data_scale_benchmark.py --workdir runs/data_scale --old-ref c834e34
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

FIRST_STEP_SCRIPT = r'''
import json, os, resource, sys, time
T0 = float(os.environ["BENCH_T0"])
from transformers import TrainerCallback


def memory():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    kb = lambda k: int(status.get(k, "0 kB").split()[0])
    data_kb, current = 0, None  # resident pages of the memory-mapped training data (.arrow files)
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            current = parts[5] if len(parts) > 5 else ""
        elif parts and parts[0] == "Rss:" and current and current.endswith(".arrow"):
            data_kb += int(parts[1])
    return {"vmhwm_mb": kb("VmHWM") / 1024, "vmrss_mb": kb("VmRSS") / 1024, "rss_anon_mb": kb("RssAnon") / 1024,
            "rss_file_mb": kb("RssFile") / 1024,
            "data_file_mb": data_kb / 1024}


MALLOC = {"live_peak_mb": 0.0}
if os.environ.get("BENCH_MALLOC"):
    import ctypes, threading

    class _MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallinfo2.restype = _MallInfo2

    def malloc_live_mb():
        info = _libc.mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20  # in use in the arenas + in mmapped chunks

    def _sample():
        while True:
            MALLOC["live_peak_mb"] = max(MALLOC["live_peak_mb"], malloc_live_mb())
            time.sleep(0.01)

    threading.Thread(target=_sample, daemon=True).start()


class FirstStep(TrainerCallback):
    """Seconds to the end of step 1 and memory then; the peak memory over ``BENCH_STEPS`` steps (later batches
    can be longer than the first one, and the allocator's heap grows over the first steps)."""

    def __init__(self):
        self.out, self.begin = None, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = {"begin_rss_mb": memory()["vmrss_mb"]}
        if os.environ.get("BENCH_MALLOC"):
            self.begin["begin_malloc_live_mb"] = malloc_live_mb()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            import embedtrain
            self.out = {"rank": int(os.environ.get("RANK", "0")), "first_step_s": time.time() - T0,
                        "module": embedtrain.__file__, **{f"step1_{k}": v for k, v in memory().items()}}
        if state.global_step == int(os.environ.get("BENCH_STEPS", "1")):
            self.out.update(memory(), steps=state.global_step, **self.begin)
            if os.environ.get("BENCH_MALLOC"):
                self.out["malloc_live_peak_mb"] = MALLOC["live_peak_mb"]
            with open(os.path.join(sys.argv[2], f"rank{self.out['rank']}.json"), "w") as fh:
                json.dump(self.out, fh)
            # every rank is done with the measured steps (their gradients were all-reduced): what follows
            # (saving the final model, the run record) is not measured, so end here instead of spending minutes
            os._exit(0)


def stock(recipe_path):
    """The same job on the stock sentence-transformers trainer, data loaded the stock way (``load_dataset``:
    datasets' own Arrow cache, memory-mapped)."""
    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers, SentenceTransformerTrainingArguments)
    from embedtrain.models.resolve import resolve_model_path  # only to find the packaged model folder

    recipe = json.load(open(recipe_path))
    training = recipe["training"]
    args = SentenceTransformerTrainingArguments(
        output_dir=recipe["output_dir"], per_device_train_batch_size=training["per_device_train_batch_size"],
        max_steps=training["max_steps"], logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES, dataloader_num_workers=0,
        gradient_checkpointing=bool(training.get("gradient_checkpointing")))
    model = SentenceTransformer(str(resolve_model_path(recipe["model"]["name_or_path"])), device="cpu")
    model.max_seq_length = recipe["model"]["max_seq_length"]
    with args.main_process_first():
        data = load_dataset("json", data_files=recipe["datasets"][0]["path"], split="train")
    loss = MultipleNegativesRankingLoss(model, gather_across_devices=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss,
                               callbacks=[FirstStep()]).train()


if len(sys.argv) > 3 and sys.argv[3] == "stock":
    stock(sys.argv[1])
else:
    try:
        from embedtrain.api import train
    except ImportError:
        train = None
    if train is not None:
        train(sys.argv[1], callbacks=[FirstStep()])
    else:  # the previous layout (before embedtrain.api)
        from embedtrain.training import train_from_recipe
        train_from_recipe(sys.argv[1], callbacks=[FirstStep()])
'''


def write_pairs(path: Path, n: int, seed: int = 0) -> int:
    """``n`` synthetic (query, passage) rows; returns the file size."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(30000)])
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, n, 20000):
            m = min(20000, n - start)
            ql, pl = rng.integers(5, 16, m), rng.integers(40, 101, m)
            qw, pw = vocab[rng.integers(0, len(vocab), ql.sum())], vocab[rng.integers(0, len(vocab), pl.sum())]
            qo, po = np.r_[0, np.cumsum(ql)], np.r_[0, np.cumsum(pl)]
            # words are [a-z] only: the f-string is exactly json.dumps' output, written ~2x faster
            fh.write("".join(f'{{"query": "{start + i} {" ".join(qw[qo[i]:qo[i + 1]])}", '
                             f'"passage": "{" ".join(pw[po[i]:po[i + 1]])}"}}\n' for i in range(m)))
    return path.stat().st_size


def write_recipe(path: Path, data: Path, out: Path, gradient_checkpointing: bool = False, steps: int = 10,
                 recompute_attention: bool = False) -> Path:
    training = {"per_device_train_batch_size": 16, "max_steps": steps + 1, "logging_steps": 1, "save_steps": 1000,
                "dataloader_num_workers": 0}
    if gradient_checkpointing:
        training["gradient_checkpointing"] = True
    recipe = {  # JSON is YAML
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": 128},
        "datasets": [{"name": "pairs", "path": str(data), "format": "pairs"}],
        "loss": {"name": "mnrl", "params": {"gather_across_devices": True}},
        "training": training,
        "output_dir": str(out)}
    if recompute_attention:
        recipe["speed"] = {"recompute_attention": True}
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def env_for(tree: Path | None, cache: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", EMBEDTRAIN_CACHE_DIR=str(cache), HF_DATASETS_CACHE=str(cache / "hf"))
    env["PYTHONPATH"] = str(tree or REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_validate(recipe: Path, env: dict) -> dict:
    """``embedtrain validate`` in a child process: wall seconds and the child's peak RSS."""
    code = ("import resource, sys, time; t=time.perf_counter()\n"
            "try:\n    from embedtrain.api import validate\nexcept ImportError:\n"
            "    from embedtrain.training import validate_recipe as validate\n"
            "validate(sys.argv[1]); print('SECONDS', time.perf_counter()-t);"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024);"
            "import embedtrain; print('MODULE', embedtrain.__file__)")
    # run in the work folder: ``python -c`` puts the working directory first on sys.path, and a checkout's
    # embedtrain there would shadow the tree under test
    proc = subprocess.run([sys.executable, "-c", code, str(recipe)], env=env, capture_output=True, text=True,
                          cwd=recipe.parent)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    values = dict(line.split() for line in proc.stdout.splitlines()
                  if line.startswith(("SECONDS", "MAXRSS", "MODULE")))
    return {"seconds": float(values["SECONDS"]), "peak_rss_mb": float(values["MAXRSS"]), "module": values["MODULE"]}


def check_tree(used: str, tree: Path | None) -> None:
    """Fail when a measured process imported embedtrain from another tree than the one under test."""
    expected = (tree or REPO).resolve() / "embedtrain"
    if not Path(used).resolve().is_relative_to(expected):
        raise RuntimeError(f"measured process imported {used}, expected the package in {expected}")


def run_first_step(recipe: Path, env: dict, workdir: Path, port: int, steps: int,
                   mode: str = "embedtrain", malloc_stats: bool = False) -> list[dict]:
    """One ``accelerate launch`` of 2 processes; per rank: time to step 1, memory at step 1 and the peak over
    ``steps`` steps (the recipe runs one more, so the measured ones end before the trainer's own end)."""
    shutil.rmtree(json.loads(recipe.read_text())["output_dir"], ignore_errors=True)  # a fresh run each time
    script = workdir / "first_step.py"
    script.write_text(FIRST_STEP_SCRIPT)
    out = workdir / "ranks"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = dict(env, BENCH_T0=str(time.time()), BENCH_STEPS=str(steps), OMP_NUM_THREADS="1",
               BENCH_MALLOC="1" if malloc_stats else "")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", str(port),
           str(script), str(recipe), str(out), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def measure(tree: Path | None, data: Path, n: int, workdir: Path, port: int, label: str,
            gradient_checkpointing: bool = False, stock: bool = False, steps: int = 10,
            recompute_attention: bool = False, malloc_stats: bool = False) -> dict:
    cache = workdir / f"cache-{label}"
    shutil.rmtree(cache, ignore_errors=True)
    recipe = write_recipe(workdir / f"recipe-{label}.json", data, workdir / f"out-{label}", gradient_checkpointing,
                          steps, recompute_attention and tree is None)  # the old implementation has no speed:
    env = env_for(tree, cache)
    result: dict = {"implementation": label, "rows": n}
    v = run_validate(recipe, env)
    check_tree(v.pop("module"), tree)
    result["validate"] = {**v, "rows_per_s": round(n / v["seconds"])}
    meta = list(cache.glob("datasets/*/meta.json"))
    if meta:
        prep = json.loads(meta[0].read_text())
        result["validate"]["prepare_s"] = prep["seconds"]
        result["validate"]["prepare_rows_per_s"] = round(n / prep["seconds"])
    if tree is None:  # the new implementation: a cold start (empty cache) and a warm one
        shutil.rmtree(cache, ignore_errors=True)
        result["first_step_cold"] = run_first_step(recipe, env, workdir, port, steps, malloc_stats=malloc_stats)
    # old: reads again; new: warm cache
    result["first_step"] = run_first_step(recipe, env, workdir, port + 1, steps, malloc_stats=malloc_stats)
    for x in result["first_step"] + result.get("first_step_cold", []):
        check_tree(x.pop("module"), tree)
    if stock:  # the anchor: stock trainer, stock data loading (cold: load_dataset prepares its cache; warm)
        recipe = write_recipe(recipe, data, workdir / f"out-{label}", gradient_checkpointing, steps)
        result["stock_first_step_cold"] = run_first_step(recipe, env, workdir, port + 2, steps, "stock", malloc_stats)
        result["stock_first_step"] = run_first_step(recipe, env, workdir, port + 3, steps, "stock", malloc_stats)
        for x in result["stock_first_step_cold"] + result["stock_first_step"]:
            x.pop("module")
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(workdir / f"out-{label}", ignore_errors=True)
    return result


def show(r: dict) -> None:
    v = r["validate"]
    print(f"[{r['implementation']}] {r['rows']:>9,} rows  validate {v['seconds']:7.1f}s "
          f"({v['rows_per_s']:>9,} rows/s end to end" + (f", {v['prepare_rows_per_s']:,} rows/s data pass"
                                                            if "prepare_rows_per_s" in v else "") +
          f")  peak RSS {v['peak_rss_mb']:.0f} MB")
    for key in ("first_step_cold", "first_step", "stock_first_step_cold", "stock_first_step"):
        if key in r:
            ranks = r[key]
            print(f"    {key:16} " + "  ".join(
                f"rank{x['rank']}: {x['first_step_s']:.1f}s, VmHWM {x['step1_vmhwm_mb']:.0f} MB at step 1, "
                f"{x['vmhwm_mb']:.0f} MB by step {x['steps']}, RssAnon {x['rss_anon_mb']:.0f} MB, data file "
                f"{x.get('step1_data_file_mb', 0):.0f} MB at step 1" + (
                    f" (RSS {x['begin_rss_mb']:.0f} MB when training starts, malloc live "
                    f"{x['begin_malloc_live_mb']:.0f} MB then and {x['malloc_live_peak_mb']:.0f} MB at most)"
                    if "malloc_live_peak_mb" in x else "") for x in ranks))


def old_tree_from_ref(ref: str, workdir: Path) -> Path:
    """The ``embedtrain`` package of commit ``ref`` of this repository, extracted under ``workdir``."""
    tree = workdir / f"old-{ref}"
    if not (tree / "embedtrain" / "__init__.py").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = tree / "embedtrain.tar"
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), ref, "embedtrain"],
                       check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        archive.unlink()
    return tree


def summary(results: list[dict]) -> None:
    """One line per measured implementation and size: the figures the issue asks for."""
    print("\nimplementation      rows  validate s  rows/s (end to end)  rows/s (data pass)  first step s "
          "cold / warm (slowest rank)  peak VmHWM / RssAnon MB over the steps (largest rank, any run)  data file "
          "resident MB at step 1")
    for r in results:
        v, warm, ranks = r["validate"], r["first_step"], r["first_step"] + r.get("first_step_cold", [])
        cold = f"{max(x['first_step_s'] for x in r['first_step_cold']):.1f}" if "first_step_cold" in r else "-"
        data_pass = f"{v['prepare_rows_per_s']:,}" if "prepare_rows_per_s" in v else "-"
        print(f"{r['implementation']:8} {r['rows']:>11,} {v['seconds']:>11.1f} {v['rows_per_s']:>20,} "
              f"{data_pass:>19} {cold:>13} / {max(x['first_step_s'] for x in warm):.1f}"
              f"{'':19}{max(x['vmhwm_mb'] for x in ranks):>8.0f} / {max(x['rss_anon_mb'] for x in ranks):.0f}"
              f"{'':36}{max(x.get('step1_data_file_mb', float('nan')) for x in ranks):>8.0f}")
        if "stock_first_step" in r:
            sc, sw = r["stock_first_step_cold"], r["stock_first_step"]
            print(f"{'stock':8} {r['rows']:>11,} {'-':>11} {'-':>20} {'-':>19} "
                  f"{max(x['first_step_s'] for x in sc):>13.1f} / {max(x['first_step_s'] for x in sw):.1f}"
                  f"{'':19}{max(x['vmhwm_mb'] for x in sc + sw):>8.0f} / {max(x['rss_anon_mb'] for x in sc + sw):.0f}"
                  f"{'':36}{max(x.get('step1_data_file_mb', float('nan')) for x in sc + sw):>8.0f}")
            ours, theirs = max(x["vmhwm_mb"] for x in ranks), max(x["vmhwm_mb"] for x in sc + sw)
            print(f"    {r['rows']:,} rows, stock / embedtrain: peak VmHWM per rank {theirs / ours:.2f}x, time to "
                  f"first step {max(x['first_step_s'] for x in sc) / max(x['first_step_s'] for x in r['first_step_cold']):.2f}x"
                  f" (cold) and {max(x['first_step_s'] for x in sw) / max(x['first_step_s'] for x in warm):.2f}x (warm)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/data_scale"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--compare-size", type=int, default=100_000)
    parser.add_argument("--old-tree", type=Path, default=None,
                        help="the folder holding the previous implementation's embedtrain package")
    parser.add_argument("--old-ref", default=None,
                        help="a commit of this repository with the previous implementation (e.g. c834e34)")
    parser.add_argument("--port", type=int, default=29591)
    parser.add_argument("--no-stock", action="store_true",
                        help="skip the anchor: the stock sentence-transformers trainer on the same job")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="train with gradient checkpointing (embedtrain and stock alike)")
    parser.add_argument("--steps", type=int, default=10,
                        help="optimizer steps per run; peak memory is taken over all of them (time: to step 1)")
    parser.add_argument("--malloc-stats", action="store_true",
                        help="split each rank's peak: RSS when training starts, live malloc bytes at most (glibc)")
    parser.add_argument("--recompute-attention", action="store_true",
                        help="embedtrain with speed.recompute_attention (stock has no such setting)")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"disk free at {args.workdir}: {shutil.disk_usage(args.workdir).free / 2**30:.1f} GiB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    old_tree = args.old_tree
    if old_tree is None and args.old_ref:
        old_tree = old_tree_from_ref(args.old_ref, args.workdir)
    if old_tree is None:
        print("no previous implementation given (--old-ref / --old-tree): no ratios are printed")
    results = []
    for n in args.sizes:
        data = args.workdir / f"pairs-{n}.jsonl"
        t = time.perf_counter()
        size = write_pairs(data, n)
        print(f"wrote {n:,} pairs ({size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f}s")
        new = measure(None, data, n, args.workdir, args.port, "new", args.gradient_checkpointing,
                      stock=not args.no_stock, steps=args.steps, recompute_attention=args.recompute_attention,
                      malloc_stats=args.malloc_stats)
        new["file_mb"] = round(size / 2**20)
        results.append(new)
        show(new)
        if n == args.compare_size and old_tree is not None:
            old = measure(old_tree, data, n, args.workdir, args.port + 4, "old", args.gradient_checkpointing,
                          steps=args.steps)
            results.append(old)
            show(old)
            ratio_v = old["validate"]["seconds"] / new["validate"]["seconds"]
            old_t = np.mean([x["first_step_s"] for x in old["first_step"]])
            ratio_c = old_t / np.mean([x["first_step_s"] for x in new["first_step_cold"]])
            ratio_t = old_t / np.mean([x["first_step_s"] for x in new["first_step"]])
            ratio_r = (max(x["vmhwm_mb"] for x in old["first_step"]) / max(x["vmhwm_mb"] for x in new["first_step"]))
            ratio_a = (max(x["rss_anon_mb"] for x in old["first_step"])
                       / max(x["rss_anon_mb"] for x in new["first_step"]))
            print(f"    at {n:,} rows, previous implementation / this one: validate time {ratio_v:.1f}x, "
                  f"time to first step {ratio_c:.2f}x (cold cache) and {ratio_t:.2f}x (warm cache), "
                  f"peak RSS per rank {ratio_r:.2f}x (VmHWM) and {ratio_a:.2f}x (RssAnon)")
        data.unlink()
        (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
    summary(results)


if __name__ == "__main__":
    main()
