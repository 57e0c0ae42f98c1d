"""The sentence-transformers module of a task-adapter model: one frozen base, one LoRA adapter per task.

:class:`TaskAdapterTransformer` is sentence-transformers' ``Transformer`` module with peft LoRA
adapters injected into its Hugging Face model (through transformers' ``PeftAdapterMixin``:
``add_adapter`` / ``set_adapter`` / ``disable_adapters``) and a table ``task -> (adapter, prompt)``.
It declares ``task`` as a forward keyword, so ``model.encode(texts, task="retrieval.query")``
reaches it twice: in :meth:`preprocess` (the task's prompt is prepended unless the caller gave a
prompt) and in :meth:`forward` (the task's adapter is activated). ``encode_query`` /
``encode_document`` pass ``task="query"`` / ``"document"``, which resolve through the task aliases.
Without a task the base model runs with adapters disabled (or ``default_task``, if set).

During training sentence-transformers' data collator stamps each column's features with the task
from ``router_mapping`` (``{dataset: {column: task}}``), so a retrieval pair can send its query
column through one adapter and its passage column through another in the same step.

Checkpoint layout (the folder of this module, normally the model root)::

    config.json, model.safetensors      the base model, without any LoRA weights
    tokenizer files, sentence_bert_config.json
    task_adapters.json                  tasks, their adapter and prompt, aliases, default task
    adapters/<adapter>/adapter_config.json + adapter_model.safetensors   (standard peft format)

``modules.json`` names this class (``embedtrain.adapters.module.TaskAdapterTransformer``). Plain
``SentenceTransformer(path)`` imports classes outside its own namespace only with ``trust_remote_code=True``;
:func:`embedtrain.models.load_model` loads such checkpoints without that flag by handing this (installed)
class to sentence-transformers directly (:mod:`embedtrain.models.trust`). No code is ever fetched.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from sentence_transformers.util import load_dir_path

from embedtrain.errors import CheckpointError
from embedtrain.schema.tasks import TaskAdaptersFile, TaskRoute

logger = logging.getLogger(__name__)

TASKS_FILE = "task_adapters.json"
ADAPTERS_DIR = "adapters"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Parameter-name segments that belong to a LoRA adapter rather than to the base model.
_LORA_SEGMENTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
_LORA_KEY = re.compile(r"(^|\.)(" + "|".join(_LORA_SEGMENTS) + r")\.")
#: Key prefix peft uses in saved adapter files (``PeftModel`` wraps the model twice).
PEFT_PREFIX = "base_model.model."

_UNSET = object()


class TaskAdapterTransformer(Transformer):
    """A ``Transformer`` module whose HF model carries one LoRA adapter per task (see module docstring)."""

    forward_kwargs = {"task"}

    # -- construction ----------------------------------------------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_task_state()

    def _init_task_state(self) -> None:
        self.routes: dict[str, TaskRoute] = {}
        self.aliases: dict[str, str] = {}
        self.default_task: str | None = None
        #: MTEB task type (or ``Type:side``) -> task; see embedtrain.adapters.mteb_map.
        self.mteb_map: dict[str, str] = {}
        self._active: Any = _UNSET
        #: True inside :meth:`preprocess`; sentence-transformers re-enters it to measure the prompt's length.
        self._in_preprocess = False
        #: Every LoRA parameter and whether it should train (see :meth:`set_trainable`).
        self._lora_flags: list[tuple[torch.nn.Parameter, bool]] = []

    @classmethod
    def from_transformer(cls, module: Transformer) -> TaskAdapterTransformer:
        """Turn a loaded plain ``Transformer`` into a task-adapter module in place (no weights are copied).

        The subclass only adds behaviour and a few attributes, so re-classing the instance is exact
        and avoids loading a second copy of the base model.
        """
        if isinstance(module, cls):
            return module
        if type(module) is not Transformer:
            raise TypeError(f"expected a sentence-transformers Transformer module, got {type(module).__name__}")
        module.__class__ = cls
        module._init_task_state()  # type: ignore[attr-defined]
        return module  # type: ignore[return-value]

    # -- task table ------------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        """Task names, in the order they were added."""
        return list(self.routes)

    def adapter_names(self) -> list[str]:
        """Distinct adapters used by the tasks, in order of first use."""
        return list(dict.fromkeys(r.adapter for r in self.routes.values() if r.adapter is not None))

    def add_task(self, task: str, *, adapter: str | None, prompt: str | None = None,
                 lora_config=None, aliases: Sequence[str] = ()) -> None:
        """Register ``task``; create adapter ``adapter`` from ``lora_config`` if it does not exist yet."""
        if task in self.routes:
            raise ValueError(f"task '{task}' already exists")
        if adapter is not None and adapter not in self.adapter_names() and adapter not in self._peft_adapters():
            if lora_config is None:
                raise ValueError(f"adapter '{adapter}' does not exist; pass its lora_config")
            _add_adapter(self.model, lora_config, adapter)
        self.routes[task] = TaskRoute(adapter=adapter, prompt=prompt)
        for alias in aliases:
            if alias in self.routes or self.aliases.get(alias, task) != task:
                raise ValueError(f"alias '{alias}' is already taken")
            self.aliases[alias] = task
        self._active = _UNSET  # add_adapter activates the new adapter; force a switch on next use

    def _peft_adapters(self) -> list[str]:
        return list(getattr(self.model, "peft_config", {}) or {})

    def resolve_task(self, task: str | None) -> str | None:
        """Canonical task name for ``task`` (an alias or ``None`` -> ``default_task``); ``None`` = base model."""
        if task is None:
            task = self.default_task
        if task is None:
            return None
        task = self.aliases.get(task, task)
        if task not in self.routes:
            known = ", ".join(self.routes) or "none"
            alias_text = f"; aliases: {', '.join(self.aliases)}" if self.aliases else ""
            raise ValueError(f"unknown task '{task}'. This model's tasks: {known}{alias_text}")
        return task

    # -- adapter switching -----------------------------------------------------------------------------
    def activate(self, task: str | None) -> str | None:
        """Make ``task``'s adapter the active one (``None``: adapters off); return the canonical task."""
        task = self.resolve_task(task)
        adapter = self.routes[task].adapter if task is not None else None
        if adapter == self._active:
            return task
        if self._peft_adapters():
            if adapter is None:
                self.model.disable_adapters()
            else:
                if self._active is None or self._active is _UNSET:
                    self.model.enable_adapters()
                self.model.set_adapter(adapter)
        self._active = adapter
        # peft's set_adapter/disable_adapters flip requires_grad of the adapters they (de)activate. An
        # adapter used earlier in this step must keep requires_grad, or autograd drops its gradient, and
        # a frozen adapter must stay frozen: restore what set_trainable chose.
        for param, flag in self._lora_flags:
            param.requires_grad_(flag)
        return task

    def set_trainable(self, adapters: Sequence[str] | None) -> list[str]:
        """Freeze everything except the LoRA weights of ``adapters`` (``None``: freeze all); return their names."""
        chosen = set(adapters or ())
        self._lora_flags = []
        names = []
        for name, param in self.model.named_parameters():
            match = _LORA_KEY.search(name)
            adapter = name[match.end():].split(".", 1)[0] if match else None
            trainable = adapter is not None and adapter in chosen
            param.requires_grad_(trainable)
            if match:
                self._lora_flags.append((param, trainable))
            if trainable:
                names.append(name)
        return names

    # -- preprocessing / forward -----------------------------------------------------------------------
    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Tokenise; an unprompted call with a task gets that task's prompt. Stamps ``features['task']``."""
        task = self.resolve_task(kwargs.get("task"))
        # "" is what encode_query/encode_document pass by default. A nested call is sentence-transformers
        # tokenising the prompt alone (to measure it, without ``task``): adding a prompt there would recurse.
        if not prompt and task is not None and not self._in_preprocess:
            prompt = self.routes[task].prompt
        outer, self._in_preprocess = self._in_preprocess, True
        try:
            features = super().preprocess(inputs, prompt=prompt, **kwargs)
        finally:
            self._in_preprocess = outer
        if task is not None and features:
            features["task"] = task
        return features

    def forward(self, features: dict[str, Any], task: str | None = None, **kwargs) -> dict[str, Any]:
        """Activate the adapter of ``task`` (or of ``features['task']``), then run the base forward."""
        self.activate(task if task is not None else features.get("task"))
        return super().forward(features, **kwargs)

    @contextmanager
    def scoped(self, *, default_task: str | None = None, aliases: dict[str, str] | None = None) -> Iterator[None]:
        """Temporarily set the default task and override some aliases (restored on exit)."""
        previous = (self.default_task, dict(self.aliases))
        try:
            self.default_task = self.resolve_task(default_task) if default_task is not None else None
            self.aliases.update({alias: self.resolve_task(task) for alias, task in (aliases or {}).items()})
            yield
        finally:
            self.default_task, self.aliases = previous

    def using(self, task: str | None):
        """Context manager: ``task`` is the default (for evaluators that call ``encode`` without a task)."""
        return self.scoped(default_task=task)

    # -- weights ---------------------------------------------------------------------------------------
    def base_state_dict(self, merge_task: str | None = None) -> dict[str, torch.Tensor]:
        """The HF model's weights without LoRA tensors (optionally with ``merge_task``'s adapter merged in).

        Keys are those of the plain model (peft's ``.base_layer.`` segment removed), so the result loads
        into an adapter-free copy of the architecture.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        state = {}
        for key, value in self.model.state_dict().items():
            if _LORA_KEY.search(key):
                continue
            state[key.replace(".base_layer.", ".")] = value.detach()
        if merge_task is not None:
            adapter = self.routes[self.resolve_task(merge_task)].adapter
            if adapter is not None:
                for name, layer in self.model.named_modules():
                    if isinstance(layer, BaseTunerLayer) and _has_adapter(layer, adapter):
                        key = f"{name}.weight"
                        state[key] = state[key] + layer.get_delta_weight(adapter).to(state[key].dtype)
        return state

    def adapter_state_dict(self, adapter: str) -> dict[str, torch.Tensor]:
        """Weights of one adapter, keyed as peft saves them (``base_model.model.<module>.lora_A.weight``)."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.model, adapter_name=adapter)
        return {PEFT_PREFIX + k: v.detach().contiguous() for k, v in state.items()}

    def load_adapter_state_dict(self, adapter: str, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved by :meth:`adapter_state_dict` into adapter ``adapter``; every key must fit."""
        from peft import set_peft_model_state_dict

        plain = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v for k, v in state.items()}
        result = set_peft_model_state_dict(self.model, plain, adapter_name=adapter)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if _LORA_KEY.search(k)]
        missing = [k for k in getattr(result, "missing_keys", []) if _LORA_KEY.search(k) and f".{adapter}." in k]
        if unexpected or missing:
            raise ValueError(f"adapter '{adapter}' weights do not fit the model: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")

    # -- save / load -----------------------------------------------------------------------------------
    def task_file(self) -> TaskAdaptersFile:
        return TaskAdaptersFile(tasks=dict(self.routes), aliases=dict(self.aliases), default_task=self.default_task,
                                mteb=dict(self.mteb_map))

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the base model (LoRA-free), tokenizer, module config, task table and one folder per adapter."""
        save_base(self, output_path, self.base_state_dict(), safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)
        for adapter in self.adapter_names():
            folder = Path(output_path, ADAPTERS_DIR, adapter)
            folder.mkdir(parents=True, exist_ok=True)
            from safetensors.torch import save_file

            save_file(self.adapter_state_dict(adapter), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
            config = self.model.peft_config[adapter]
            saved_base = config.base_model_name_or_path
            config.base_model_name_or_path = None  # a local path of the training machine means nothing elsewhere
            try:
                config.save_pretrained(str(folder))
            finally:
                config.base_model_name_or_path = saved_base
        Path(output_path, TASKS_FILE).write_text(self.task_file().model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs) -> TaskAdapterTransformer:
        """Load the base like a ``Transformer``, then attach every adapter listed in ``task_adapters.json``."""
        module = super().load(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                              revision=revision, local_files_only=local_files_only, **kwargs)
        folder = load_dir_path(model_name_or_path=model_name_or_path, subfolder=subfolder, token=token,
                               cache_folder=cache_folder, revision=revision, local_files_only=local_files_only)
        module.load_tasks(Path(folder))
        return module

    def load_tasks(self, folder: Path) -> None:
        """Read ``task_adapters.json`` and the adapter folders next to it."""
        from peft import LoraConfig
        from safetensors.torch import load_file

        table = TaskAdaptersFile.model_validate(json.loads((folder / TASKS_FILE).read_text(encoding="utf-8")))
        for adapter in dict.fromkeys(r.adapter for r in table.tasks.values() if r.adapter is not None):
            adapter_dir = folder / ADAPTERS_DIR / adapter
            config = LoraConfig.from_pretrained(str(adapter_dir))
            config.inference_mode = False
            _add_adapter(self.model, config, adapter)
            self.load_adapter_state_dict(adapter, load_file(str(adapter_dir / ADAPTER_WEIGHTS)))
        self.routes = dict(table.tasks)
        self.aliases = dict(table.aliases)
        self.default_task = table.default_task
        self.mteb_map = dict(table.mteb)
        self.set_trainable(None)
        self._active = _UNSET


def _add_adapter(hf_model, config, name: str) -> None:
    """``hf_model.add_adapter`` without peft's warning that a second adapter is being added (we mean to)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        hf_model.add_adapter(config, adapter_name=name)


def _has_adapter(layer, adapter: str) -> bool:
    """Whether a peft tuner layer holds weights of ``adapter`` (linear or embedding LoRA)."""
    return any(adapter in (getattr(layer, attr, None) or {}) for attr in ("lora_A", "lora_embedding_A"))


@contextmanager
def _saving_as_plain_model(hf_model) -> Iterator[None]:
    """Make transformers' ``save_pretrained`` write full weights although adapters are attached.

    With adapters loaded it would otherwise save only the active adapter (PEFT format); we save the
    adapters ourselves, one folder each, and want the base folder to be an ordinary model.
    """
    loaded = getattr(hf_model, "_hf_peft_config_loaded", False)
    hf_model._hf_peft_config_loaded = False
    try:
        yield
    finally:
        hf_model._hf_peft_config_loaded = loaded


def save_base(module: Transformer, output_path: str, state: dict[str, torch.Tensor], *,
              safe_serialization: bool = True) -> None:
    """Save ``module``'s HF config plus ``state`` as an ordinary (adapter-free) transformers checkpoint."""
    with _saving_as_plain_model(module.model):
        module.model.save_pretrained(output_path, state_dict=state, safe_serialization=safe_serialization)


def task_module(model) -> TaskAdapterTransformer | None:
    """The task-adapter module of a SentenceTransformer (None for an ordinary model)."""
    first = model[0]
    return first if isinstance(first, TaskAdapterTransformer) else None


def require_task_module(model, where: str | Path | None = None) -> TaskAdapterTransformer:
    """The task-adapter module of ``model``; a :class:`CheckpointError` for an ordinary model."""
    module = task_module(model)
    if module is None:
        raise CheckpointError("not a task-adapter model (its first module is "
                              f"{type(model[0]).__name__}, not TaskAdapterTransformer)", file=where)
    return module
