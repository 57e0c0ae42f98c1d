"""The model card (``README.md``) uploaded with a checkpoint: sentence-transformers' own card, extended.

sentence-transformers writes a card into every saved model (``final/README.md``): model details, usage, the
training datasets with samples, the loss and hyperparameters, training logs, evaluator tables, framework
versions and citations. :func:`build_card` keeps all of that and adds what embedtrain knows:

* front matter (``huggingface_hub.ModelCardData``): sentence-transformers' fields and tags plus ``embedtrain``
  tags, ``base_model`` when it is a Hub id, and ``model-index`` built from the MTEB results of these exact
  weights (:mod:`embedtrain.hub.results`) - **real MTEB tasks only**; local tasks (private data, the
  in-training evaluators) are described in the text, never published as benchmark results;
* a "Training with embedtrain" section: training length (``max_seq_length`` in training vs saved), data
  provenance (file name, sha256, rows used), losses with their guide/teacher models and Matryoshka/Starbucks
  sizes, dynamic mining, the dataset mixture, task adapters, soup ingredients, the curves PNG and the
  in-training evaluator scores (from ``embedtrain_run.json``, :mod:`embedtrain.train.observe`);
* MTEB results, and the recipe (paths reduced to names, secrets redacted, unset fields left out).

Nothing local reaches the card: absolute paths in sentence-transformers' text are reduced to names
(:mod:`embedtrain.hub.public`). A checkpoint without sentence-transformers' card (e.g. written by other tools)
gets embedtrain's sections under a short header.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from embedtrain.hub.public import public_data, public_name, public_recipe, scrub_paths
from embedtrain.hub.results import ResultRow, eval_results
from embedtrain.io.checkpoints import RECIPE_FILE
from embedtrain.models.inspect import saved_max_seq_length
from embedtrain.models.resolve import PACKAGED_MODELS

__all__ = ["RECIPE_FILE", "build_card", "hub_base_model", "public_name", "public_recipe", "public_soup",
           "read_recipe"]

#: Packaged short names -> Hub ids (for the ``base_model`` field).
KNOWN_HUB_IDS = {hub_id.split("/")[-1]: hub_id for hub_id in PACKAGED_MODELS if "/" in hub_id}
#: The run record written beside the final model (embedtrain.train.observe.RUN_FILE).
RUN_FILE = "embedtrain_run.json"
#: sentence-transformers' placeholder for the repository id in its usage example.
ST_MODEL_ID_PLACEHOLDER = "sentence_transformers_model_id"


def hub_base_model(name: str | None) -> str | None:
    """The Hub id of the base model, when there is one."""
    if name is None:
        return None
    if name in KNOWN_HUB_IDS:
        return KNOWN_HUB_IDS[name]
    if "/" in name and public_name(name) == name:
        return name
    return None


def read_recipe(checkpoint: Path) -> dict[str, Any] | None:
    path = checkpoint / RECIPE_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def read_run(checkpoint: Path) -> dict[str, Any] | None:
    """The run record (``embedtrain_run.json``) of a checkpoint trained by embedtrain, made public."""
    path = checkpoint / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return public_data(data) if isinstance(data, dict) else None


def _loss_text(loss: dict | None) -> str:
    """``name(param=value, ...)`` with the inner loss nested."""
    if not loss:
        return "-"
    params = ", ".join(f"{k}={v}" for k, v in (loss.get("params") or {}).items())
    inner = _loss_text(loss.get("inner")) if loss.get("inner") else ""
    args = ", ".join(a for a in (inner, params) if a)
    return f"{loss.get('name')}({args})" if args else str(loss.get("name"))


def _losses(recipe: dict[str, Any]) -> list[tuple[str, dict]]:
    """``(where, loss)`` of every loss of the recipe (recipe, tasks, datasets)."""
    found = []
    if recipe.get("loss"):
        found.append(("recipe", recipe["loss"]))
    for task in recipe.get("tasks") or []:
        if task.get("loss"):
            found.append((f"task {task.get('name')}", task["loss"]))
    for ds in [*(recipe.get("datasets") or []), *(d for t in recipe.get("tasks") or [] for d in t.get("datasets") or [])]:
        if ds.get("loss"):
            found.append((f"dataset {ds.get('name')}", ds["loss"]))
    return found


def _walk_params(loss: dict | None):
    while loss:
        yield from (loss.get("params") or {}).items()
        loss = loss.get("inner")


_SIZE_KEY = re.compile(r"dim|layer|pairs|sizes")


def _models_and_sizes(recipe: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Guide/teacher models and Matryoshka/Starbucks sizes named by the recipe's losses."""
    models, sizes = [], []
    for where, loss in _losses(recipe):
        for key, value in _walk_params(loss):
            if key in ("guide", "teacher") and isinstance(value, str):
                models.append(f"{key} `{value}` ({where} loss `{loss.get('name')}`)")
            elif _SIZE_KEY.search(key) and value is not None:
                sizes.append(f"`{key}`: {value} ({where} loss `{loss.get('name')}`)")
    return models, sizes


def _data_table(recipe: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    """Provenance of every training dataset: from the run record (sha256, rows used), else from the recipe."""
    mixture = (run or {}).get("mixture") or {}
    target, achieved = mixture.get("target") or {}, mixture.get("achieved") or {}
    rows = []
    if run and run.get("datasets"):
        for ds in run["datasets"]:
            source = (f"Hub `{ds.get('dataset')}`" + (f" ({ds['split']})" if ds.get("split") else "")
                      if ds.get("source") == "hub" else f"`{ds.get('file')}`")
            digest = f"`{ds['sha256'][:16]}`" if ds.get("sha256") else "-"
            share = (f"{target[ds['name']]:.3f} / {achieved.get(ds['name'], 0.0):.3f}"
                     if ds.get("name") in target else "-")
            extra = f"; labels from `{ds['label_column']}`" if ds.get("label_column") else ""
            rows.append(f"| {ds.get('name')} | {source} | {digest} | {ds.get('rows', '-')} | {ds.get('format')} | "
                        f"{ds.get('loss', '-')}{extra} | {share} |")
    else:
        tasks = recipe.get("tasks") or []
        groups = [t.get("datasets") or [] for t in tasks] or [recipe.get("datasets") or []]
        for datasets in groups:
            for ds in datasets:
                rows.append(f"| {ds.get('name')} | `{ds.get('path')}` | - | {ds.get('max_samples') or 'all'} | "
                            f"{ds.get('format')} | {_loss_text(ds.get('loss') or recipe.get('loss'))} | - |")
    if not rows:
        return []
    return ["| dataset | source | sha256 (first 16) | rows used | format | loss | batches: target / achieved |",
            "|---|---|---|---:|---|---|---|", *rows, "",
            "Files are named by their file name only; the sha256 identifies their exact contents."]


def _length_lines(run: dict[str, Any] | None, checkpoint: Path) -> list[str]:
    lengths = (run or {}).get("max_seq_length") or {}
    trained = lengths.get("training")
    saved = saved_max_seq_length(checkpoint) or lengths.get("saved")  # the files as they are now
    if trained is None and saved is None:
        return []
    if trained is None:
        return [f"- **Sequence length**: the saved model encodes up to {saved} tokens (training length not recorded)."]
    if saved is None or saved == trained:
        return [f"- **Sequence length**: trained at `max_seq_length` {trained} tokens; the saved model encodes up "
                f"to {trained if saved is None else saved} tokens."]
    return [f"- **Sequence length**: trained at `max_seq_length` **{trained}** tokens; the saved model encodes up "
            f"to **{saved}** tokens. Texts longer than {trained} tokens were truncated in training."]


def _mining_lines(recipe: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    lines = []
    datasets = [*(recipe.get("datasets") or []), *(d for t in recipe.get("tasks") or [] for d in t.get("datasets") or [])]
    rounds = (run or {}).get("mining_rounds") or []
    for ds in datasets:
        dynamic = (ds.get("mining") or {}).get("dynamic")
        if not dynamic:
            continue
        mine = [r for r in rounds if r.get("dataset") == ds.get("name")]
        settings = ", ".join(f"{k}={v}" for k, v in dynamic.items())
        done = (f"; {len(mine)} rounds refreshed {sum(int(r.get('refreshed', 0)) for r in mine)} rows"
                if mine else "")
        lines.append(f"- Dynamic hard-negative re-mining on `{ds.get('name')}` with the model being trained "
                     f"({settings}){done}.")
    mined = {d.get("name"): d["mined"] for d in (run or {}).get("datasets") or [] if d.get("mined")}
    for ds in datasets:
        if ds.get("format") != "hard_negatives":
            continue
        if ds.get("name") in mined:
            from embedtrain.mining.provenance import describe

            lines.append(f"- Hard negatives of `{ds.get('name')}` {describe(mined[ds['name']], model_name=public_name)}"
                         " (`embedtrain mine`).")
        else:
            lines.append(f"- Hard negatives of `{ds.get('name')}` were mined before training; how is not recorded "
                         "(no `embedtrain mine` stats file next to the data).")
    return lines


def _evaluator_lines(run: dict[str, Any] | None) -> list[str]:
    evaluators = (run or {}).get("evaluators") or {}
    before, after = evaluators.get("before") or {}, evaluators.get("after") or {}
    mains = evaluators.get("main_metrics") or {}
    if not after:
        return []
    lines = ["In-training evaluators (on local data, so not in the model-index; main metric x 100):", "",
             "| evaluator | metric | before | after |", "|---|---|---:|---:|"]
    for name, value in after.items():
        b = before.get(name)
        lines.append(f"| {name} | {mains.get(name, '-')} | {'-' if b is None else f'{b:.2f}'} | {value:.2f} |")
    return lines


def _results_table(rows: list[ResultRow]) -> list[str]:
    if not rows:
        return ["No MTEB results for these weights were found (run `embedtrain eval` on the checkpoint first)."]
    lines = ["| task | type | split | metric | score |", "|---|---|---|---|---:|"]
    for r in rows:
        subset = f" ({r.subset})" if r.subset != "default" else ""
        lines.append(f"| {r.task}{subset} | {r.task_type} | {r.split} | {r.metric} | {r.value:.2f} |")
    return lines


def _local_results(rows: list[ResultRow]) -> list[str]:
    if not rows:
        return []
    lines = ["Local evaluation tasks (the user's own data, not MTEB benchmarks; not in the model-index):", "",
             "| task | split | metric | score |", "|---|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r.task} | {r.split} | {r.metric} | {r.value:.2f} |")
    return lines


def _usage(repo_id: str, tasks: dict[str, Any] | None, custom_modules: list[str] | None = None) -> list[str]:
    if not tasks and custom_modules:  # embedtrain's own module classes (latent-attention pooling)
        return [f"Its modules include embedtrain's {', '.join(f'`{m}`' for m in custom_modules)}, so load it with "
                "embedtrain installed (`pip install embedtrain`):", "",
                "```python", "from sentence_transformers import SentenceTransformer", "",
                f'model = SentenceTransformer("{repo_id}", trust_remote_code=True)  '
                "# or embedtrain.models.load_model(path), which needs no flag",
                'embeddings = model.encode(["The weather is lovely today.", "It is sunny outside."])',
                "```"]
    if not tasks:
        return ["```python", "from sentence_transformers import SentenceTransformer", "",
                f'model = SentenceTransformer("{repo_id}")',
                'embeddings = model.encode(["The weather is lovely today.", "It is sunny outside."])',
                "```"]
    first = next(iter(tasks.get("tasks", {})), "TASK")
    lines = ["This checkpoint holds one frozen base model and one LoRA adapter per task; the adapter (and the "
             "task's prompt) is chosen per call with `task=`. Its first module is embedtrain's "
             "`TaskAdapterTransformer`, so load it with embedtrain installed (`pip install embedtrain`):", "",
             "```python", "from embedtrain.models import load_model", "",
             f'model = load_model("path/to/downloaded/{repo_id.split("/")[-1]}")  '
             "# or SentenceTransformer(path, trust_remote_code=True)",
             f'embeddings = model.encode(["The weather is lovely today."], task="{first}")', "```", "",
             "| task | adapter | prompt |", "|---|---|---|"]
    for name, route in tasks.get("tasks", {}).items():
        prompt = route.get("prompt")
        lines.append(f"| `{name}` | {route.get('adapter') or '(base)'} | {json.dumps(prompt) if prompt else '-'} |")
    if tasks.get("aliases"):
        lines += ["", "Aliases: " + ", ".join(f"`{a}` -> `{t}`" for a, t in tasks["aliases"].items())]
    lines += ["", "`embedtrain export-task CHECKPOINT --task NAME OUT` writes one task as a plain "
              "sentence-transformers model (adapter merged, prompt as default)."]
    return lines


def _soup_section(soup: dict[str, Any]) -> list[str]:
    lines = [f"This model is a **{soup.get('method')} soup**: the parameter average of "
             f"{len(soup.get('members') or [])} fine-tuned checkpoints.", "",
             "| ingredient | weight | held-out score alone |", "|---|---:|---:|"]
    scores = soup.get("individual_scores") or {}
    weights = dict(zip(soup.get("members") or [], soup.get("weights") or []))
    for name in soup.get("ingredients") or soup.get("members") or []:
        score = scores.get(name)
        lines.append(f"| {name} | {weights.get(name, 0.0):.3f} | {'-' if score is None else f'{score:.2f}'} |")
    if soup.get("soup_score") is not None:
        lines += ["", f"Soup on {soup.get('metric') or 'the held-out set'}: **{soup['soup_score']:.2f}**."]
    return lines


def public_soup(soup: dict[str, Any]) -> dict[str, Any]:
    """``soup.json`` with ingredient paths reduced to names."""
    def name(p: Any) -> Any:
        return public_name(p) if isinstance(p, str) else p

    out = dict(soup)
    for key in ("members", "ingredients"):
        if isinstance(out.get(key), list):
            out[key] = [name(p) for p in out[key]]
    if isinstance(out.get("individual_scores"), dict):
        out["individual_scores"] = {name(k): v for k, v in out["individual_scores"].items()}
    if isinstance(out.get("greedy_steps"), list):
        out["greedy_steps"] = [{**s, "ingredient": name(s.get("ingredient"))} for s in out["greedy_steps"]]
    return out


def embedtrain_sections(checkpoint: Path, repo_id: str, recipe: dict[str, Any] | None, run: dict[str, Any] | None,
                        tasks: dict[str, Any] | None, soup: dict[str, Any] | None, rows: list[ResultRow]) -> list[str]:
    """The card sections embedtrain adds (markdown lines)."""
    mteb_rows = [r for r in rows if r.is_mteb]
    local_rows = [r for r in rows if not r.is_mteb]
    out: list[str] = []
    if recipe or run:
        recipe = recipe or {}
        base = ((recipe.get("model") or {}).get("name_or_path")) or (run or {}).get("base_model")
        stage = recipe.get("stage") or (run or {}).get("stage") or "contrastive"
        out += ["## Training with embedtrain", "",
                f"Trained with [embedtrain](https://pypi.org/project/embedtrain/) (stage `{stage}`)"
                + (f", starting from `{base}`." if base else "."), ""]
        facts = _length_lines(run, checkpoint)
        if run and run.get("global_step") is not None:
            facts.append(f"- **Steps**: {run['global_step']}" + (f" ({run['epochs']:.2f} epochs)"
                                                                  if isinstance(run.get("epochs"), (int, float))
                                                                  else "") + f", seed {run.get('seed')}.")
        out += [*facts, ""] if facts else []
        table = _data_table(recipe, run)
        if table:
            out += ["### Data", "", *table, ""]
        losses = _losses(recipe)
        models, sizes = _models_and_sizes(recipe)
        if losses or models or sizes:
            out += ["### Losses and models", ""]
            out += [f"- {where}: `{_loss_text(loss)}`" for where, loss in losses]
            out += [f"- Guide/teacher model: {m}" for m in models]
            out += [f"- Embedding sizes trained: {s}" for s in sizes]
            out += _mining_lines(recipe, run)
            out += [""]
        if run and run.get("curves"):
            out += ["### Training curves", "", f"![training curves]({run['curves']})", "",
                    "Loss, learning rate and evaluator scores against the step (TensorBoard logs were written to "
                    "`<output_dir>/runs/` during training).", ""]
        evaluator_lines = _evaluator_lines(run)
        if evaluator_lines:
            out += ["### In-training evaluators", "", *evaluator_lines, ""]
    if tasks:
        out += ["### Task adapters", "", *_usage(repo_id, tasks), ""]
    if soup:
        out += ["## Model soup", "", *_soup_section(soup), ""]
    out += ["## Evaluation (MTEB)", "", *_results_table(mteb_rows), ""]
    local = _local_results(local_rows)
    if local:
        out += [*local, ""]
    if recipe:
        out += ["## embedtrain recipe", "", "Paths are reduced to file names, secrets redacted, unset fields left out.",
                "", "```yaml", yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    return out


def _insert(body: str, section: str) -> str:
    """``section`` placed before sentence-transformers' "Training Details" (or citations), else at the end."""
    for heading in ("## Training Details", "## Citation", "<!--\n## Glossary"):
        at = body.find("\n" + heading)
        if at >= 0:
            return body[:at + 1] + section + "\n" + body[at + 1:]
    return body.rstrip() + "\n\n" + section


def _embedtrain_modules(checkpoint: Path) -> list[str]:
    """embedtrain module classes named in the checkpoint's ``modules.json`` (other than task adapters)."""
    from embedtrain.models.trust import EMBEDTRAIN_MODULES, modules_json

    kinds = [str(m.get("type", "")) for m in modules_json(checkpoint)]
    return [k.rsplit(".", 1)[-1] for k in kinds if k in EMBEDTRAIN_MODULES and not k.endswith("TaskAdapterTransformer")]


def build_card(checkpoint: str | Path, repo_id: str, *, results: list[ResultRow] | None = None,
               model_name: str | None = None) -> str:
    """The README.md text for ``checkpoint`` uploaded as ``repo_id``."""
    from huggingface_hub import ModelCard, ModelCardData

    from embedtrain.hub.results import find_results

    checkpoint = Path(checkpoint)
    recipe = read_recipe(checkpoint)
    recipe = public_recipe(recipe) if recipe else None
    run = read_run(checkpoint)
    rows = find_results(checkpoint) if results is None else results
    tasks_file = checkpoint / "task_adapters.json"
    tasks = json.loads(tasks_file.read_text(encoding="utf-8")) if tasks_file.is_file() else None
    soup_file = checkpoint / "soup.json"
    soup = public_soup(json.loads(soup_file.read_text(encoding="utf-8"))) if soup_file.is_file() else None

    base_name = ((recipe or {}).get("model") or {}).get("name_or_path") or (run or {}).get("base_model")
    name = model_name or repo_id.split("/")[-1]
    st_card = None
    if (checkpoint / "README.md").is_file():
        try:
            st_card = ModelCard.load(checkpoint / "README.md")
        except Exception:  # not a card (no front matter...): start from embedtrain's header
            st_card = None
    data = st_card.data if st_card is not None else ModelCardData(library_name="sentence-transformers",
                                                                     pipeline_tag="sentence-similarity")
    tags = list(getattr(data, "tags", None) or []) or ["sentence-transformers", "sentence-similarity",
                                                       "feature-extraction"]
    tags += ["embedtrain"] + (["lora", "task-adapters"] if tasks else []) + (["model-soup"] if soup else []) \
        + (["mteb"] if any(r.is_mteb for r in rows) else [])
    data.tags = list(dict.fromkeys(tags))
    data.library_name = data.library_name or "sentence-transformers"
    data.pipeline_tag = getattr(data, "pipeline_tag", None) or "sentence-similarity"
    data.base_model = hub_base_model(base_name) or getattr(data, "base_model", None)
    # model-index: MTEB results of these exact weights on real MTEB tasks only (sentence-transformers' own
    # entries are its evaluators' scores on local data: they stay in the text, not in the metadata)
    data.model_name = name
    data.eval_results = eval_results([r for r in rows if r.is_mteb]) or None

    ours = "\n".join(embedtrain_sections(checkpoint, repo_id, recipe, run, tasks, soup, rows))
    custom = _embedtrain_modules(checkpoint)
    if st_card is not None and custom and not tasks:  # sentence-transformers' usage snippet alone would fail
        ours = "\n".join(["## Loading with embedtrain's modules", "", *_usage(repo_id, None, custom), ""]) + "\n" + ours
    if st_card is not None:
        body = st_card.text.replace(ST_MODEL_ID_PLACEHOLDER, repo_id)
        if data.base_model:  # sentence-transformers only knows it when it loaded the model from the Hub
            body = re.sub(r"<!-- - \*\*Base model:\*\* \[Unknown\]\(https://huggingface.co/unknown\) -->",
                          f"- **Base model:** [{data.base_model}](https://huggingface.co/{data.base_model})", body)
        body = _insert(scrub_paths(body), ours)
    else:
        body = "\n".join([f"# {name}", "",
                          "A text embedding model trained with [embedtrain](https://pypi.org/project/embedtrain/) on "
                          "top of sentence-transformers" + (f", starting from `{base_name}`." if base_name else "."),
                          "", "## Usage", "", *(_usage(repo_id, None, custom) if not tasks else []), ""]) + "\n" + ours
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"
