"""The model card (``README.md``) uploaded with a checkpoint.

Front matter (through ``huggingface_hub.ModelCardData``): library, pipeline tag, tags, base model when
it is a Hub id, and ``model-index`` built from the MTEB results of these exact weights
(:mod:`embedtrain.hub.results`). Body: usage (with the task argument for task-adapter models),
training data and losses from ``embedtrain_recipe.yaml`` (written by the trainer into ``final/``),
the soup recipe when ``soup.json`` is present, a results table, and the recipe itself.

Local paths never reach the card: data files and local models are named by their file/folder name
(:func:`public_recipe`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from embedtrain.hub.results import ResultRow, eval_results
from embedtrain.io.checkpoints import RECIPE_FILE
from embedtrain.io.secrets import redact
from embedtrain.models.resolve import PACKAGED_MODELS

#: Packaged short names -> Hub ids (for the ``base_model`` field).
KNOWN_HUB_IDS = {hub_id.split("/")[-1]: hub_id for hub_id in PACKAGED_MODELS if "/" in hub_id}


def _is_local(value: str) -> bool:
    p = Path(value).expanduser()
    return p.is_absolute() or value.startswith((".", "~")) or p.exists()


def public_name(value: str | None) -> str | None:
    """A path-free name: local paths become their last component; Hub ids and short names stay."""
    if value is None:
        return None
    if _is_local(value):
        return Path(value).expanduser().name or value
    return value


def hub_base_model(name: str | None) -> str | None:
    """The Hub id of the base model, when there is one."""
    if name is None:
        return None
    if name in KNOWN_HUB_IDS:
        return KNOWN_HUB_IDS[name]
    if "/" in name and not _is_local(name):
        return name
    return None


def public_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A copy of a dumped recipe with every local path reduced to its file or folder name and secrets masked."""
    data = redact(json.loads(json.dumps(recipe)))  # deep copy of plain data
    if isinstance(data.get("model"), dict):
        data["model"]["name_or_path"] = public_name(data["model"].get("name_or_path"))
    if "output_dir" in data:
        data["output_dir"] = public_name(str(data["output_dir"]))
    for section in [data, *(data.get("tasks") or [])]:
        for key in ("datasets", "evaluators"):
            for item in section.get(key) or []:
                if isinstance(item, dict) and "path" in item:
                    item["path"] = public_name(str(item["path"]))
    return data


def read_recipe(checkpoint: Path) -> dict[str, Any] | None:
    path = checkpoint / RECIPE_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _loss_name(loss: dict | None) -> str:
    if not loss:
        return "-"
    inner = loss.get("inner")
    return f"{loss.get('name')}({_loss_name(inner)})" if inner else str(loss.get("name"))


def _datasets_table(recipe: dict[str, Any]) -> list[str]:
    rows = []
    tasks = recipe.get("tasks") or []
    groups = [(t.get("name"), t.get("datasets") or [], t.get("loss") or recipe.get("loss")) for t in tasks] \
        or [(None, recipe.get("datasets") or [], recipe.get("loss"))]
    for task, datasets, loss in groups:
        for ds in datasets:
            rows.append(f"| {task or '-'} | {ds.get('name')} | {ds.get('format')} | `{ds.get('path')}` | "
                        f"{ds.get('max_samples') or 'all'} | {_loss_name(ds.get('loss') or loss)} |")
    if not rows:
        return []
    return ["| task | dataset | format | file | rows used | loss |", "|---|---|---|---|---|---|", *rows]


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


def _results_table(rows: list[ResultRow]) -> list[str]:
    if not rows:
        return ["No MTEB results for these weights were found (run `embedtrain eval` on the checkpoint first)."]
    lines = ["| task | type | split | metric | score |", "|---|---|---|---|---:|"]
    for r in rows:
        subset = f" ({r.subset})" if r.subset != "default" else ""
        lines.append(f"| {r.task}{subset} | {r.task_type} | {r.split} | {r.metric} | {r.value:.2f} |")
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
    rows = find_results(checkpoint) if results is None else results
    tasks_file = checkpoint / "task_adapters.json"
    tasks = json.loads(tasks_file.read_text(encoding="utf-8")) if tasks_file.is_file() else None
    soup_file = checkpoint / "soup.json"
    soup = public_soup(json.loads(soup_file.read_text(encoding="utf-8"))) if soup_file.is_file() else None

    base_name = ((recipe or {}).get("model") or {}).get("name_or_path")
    name = model_name or repo_id.split("/")[-1]
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "embedtrain"]
    if tasks:
        tags += ["lora", "task-adapters"]
    if soup:
        tags.append("model-soup")
    if rows:
        tags.append("mteb")
    data = ModelCardData(model_name=name, library_name="sentence-transformers", pipeline_tag="sentence-similarity",
                         tags=tags, base_model=hub_base_model(base_name), eval_results=eval_results(rows) or None)

    body = [f"# {name}", "",
            "A text embedding model trained with [embedtrain](https://pypi.org/project/embedtrain/) on top of "
            "sentence-transformers" + (f", starting from `{base_name}`." if base_name else "."), "",
            "## Usage", "", *_usage(repo_id, tasks, _embedtrain_modules(checkpoint)), ""]
    if recipe:
        body += ["## Training", ""]
        table = _datasets_table(recipe)
        if table:
            body += [*table, ""]
        if recipe.get("training"):
            body += ["Training arguments: " + ", ".join(f"`{k}={v}`" for k, v in recipe["training"].items())
                     + f"; seed {recipe.get('seed')}.", ""]
    if soup:
        body += ["## Model soup", "", *_soup_section(soup), ""]
    body += ["## Evaluation (MTEB)", "", *_results_table(rows), ""]
    if recipe:
        body += ["## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", ""]
    template = "---\n{{ card_data }}\n---\n\n{{ body }}\n"
    card = ModelCard.from_template(data, template_str=template, body="\n".join(body))
    return str(card)
