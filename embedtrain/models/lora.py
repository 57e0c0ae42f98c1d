"""One LoRA adapter over the whole transformer of a sentence-transformer (``model.lora`` of any recipe).

The adapter is injected into the Hugging Face model inside sentence-transformers' ``Transformer``
module with transformers' ``add_adapter`` (peft underneath), under the name :data:`ADAPTER_NAME`; only
the LoRA matrices (and any trainable pooling such as latent attention) train.

It works on any transformers model inside the first module: decoder LLMs and encoders (BERT) alike.
At save (:func:`finalize_lora`, called once training is over and before ``model.save``):

* ``merge: true`` folds every ``W + scaling * B @ A`` into its base layer and removes the peft
  wrappers, so the checkpoint is an ordinary model (``config.json`` + ``model.safetensors``).
* ``merge: false`` keeps the adapter: sentence-transformers saves ``adapter_config.json`` +
  ``adapter_model.safetensors`` pointing at the base folder, and reloads base + adapter by itself.
  The base model's ``config.json`` is read again at load, so :func:`write_adapter_load_kwargs` (after
  ``model.save``) records what the base config lacks -- ``is_causal`` for a bidirectional model, the
  dtype -- as ``config_kwargs``/``model_kwargs`` in ``sentence_bert_config.json``, which
  sentence-transformers passes to ``from_pretrained`` on load.

QLoRA (``quantization: 4bit``) loads the frozen base through bitsandbytes, which needs a CUDA GPU;
:func:`check_quantization_available` refuses anywhere else with one line.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtrain.env import require_compatible
from embedtrain.errors import EmbedtrainError, RecipeError
from embedtrain.schema.decoder import ModelLoraConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

#: peft adapter name of the whole-model adapter: peft's default name, the one a saved adapter reloads under, so the
#: trainer's intermediate checkpoints load back into the training model on ``--resume`` (task adapters are named
#: after their tasks).
ADAPTER_NAME = "default"


class QuantizationUnavailableError(RecipeError):
    """QLoRA was asked for where bitsandbytes or a CUDA GPU is missing."""


def quantization_problem(options: ModelLoraConfig) -> str | None:
    """Why QLoRA (``options.quantization``) cannot run here, in one line; None when it can (or is not asked)."""
    if options.quantization is None:
        return None
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (none is visible)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if not missing:
        return None
    return (f"{options.quantization} (QLoRA) needs {' and '.join(missing)}; remove 'quantization' to train LoRA "
            "on unquantized weights")


def check_quantization_available(options: ModelLoraConfig) -> None:
    """Raise :class:`QuantizationUnavailableError` unless a CUDA GPU and bitsandbytes are present."""
    problem = quantization_problem(options)
    if problem is not None:
        raise QuantizationUnavailableError(problem, field="model.lora.quantization")


def quantization_config(options: ModelLoraConfig, compute_dtype: Any = None):
    """The ``BitsAndBytesConfig`` for QLoRA (NF4 + double quantization for 4-bit, LLM.int8 for 8-bit)."""
    import torch
    from transformers import BitsAndBytesConfig

    if options.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    dtype = compute_dtype if isinstance(compute_dtype, torch.dtype) else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _hf_model(model: SentenceTransformer):
    from transformers.integrations.peft import PeftAdapterMixin

    hf = getattr(model[0], "model", None)
    if not isinstance(hf, PeftAdapterMixin):
        raise EmbedtrainError(f"model.lora needs a transformers model as first module; got {type(model[0]).__name__}")
    return hf


def attach_lora(model: SentenceTransformer, options: ModelLoraConfig) -> None:
    """Inject one LoRA adapter into every targeted layer and freeze the rest of the transformer."""
    hf = _hf_model(model)
    if has_lora(model) or getattr(hf, "_hf_peft_config_loaded", False):
        raise EmbedtrainError("the model already carries a LoRA adapter (a checkpoint saved with lora.merge: false?); "
                              "start from a merged checkpoint or its base model")
    if options.quantization is not None:
        from peft import prepare_model_for_kbit_training

        from embedtrain.models.checkpointing import is_checkpointing

        prepare_model_for_kbit_training(hf, use_gradient_checkpointing=is_checkpointing(hf),
                                        gradient_checkpointing_kwargs={"use_reentrant": False})
    require_compatible("peft", "transformers")
    hf.add_adapter(options.to_peft(), adapter_name=ADAPTER_NAME)
    trainable = sum(p.numel() for p in hf.parameters() if p.requires_grad)
    total = sum(p.numel() for p in hf.parameters())
    logger.info("LoRA r=%d on %s: %d of %d transformer parameters train (%.2f%%)", options.r,
                options.target_modules, trainable, total, 100 * trainable / max(total, 1))


def has_lora(model: SentenceTransformer) -> bool:
    """Whether the model's transformer carries a (whole-model) LoRA adapter."""
    return ADAPTER_NAME in (getattr(getattr(model[0], "model", None), "peft_config", None) or {})


def merge_lora(model: SentenceTransformer) -> int:
    """Fold the adapter into the base weights and remove every peft wrapper, in place.

    Returns the number of layers merged. Afterwards the transformer is a plain transformers model
    (its ``save_pretrained`` writes full weights and no adapter files).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    hf = _hf_model(model)
    wrapped = [(name, module) for name, module in hf.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge(adapter_names=[ADAPTER_NAME])
        parent_name, _, child = name.rpartition(".")
        parent = hf.get_submodule(parent_name) if parent_name else hf
        setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config",):
        if hasattr(hf, attr):
            delattr(hf, attr)
    hf._hf_peft_config_loaded = False
    for param in hf.parameters():
        param.requires_grad_(True)
    return len(wrapped)


def finalize_lora(model: SentenceTransformer, options: ModelLoraConfig) -> None:
    """Prepare a LoRA-trained model for ``model.save`` according to ``options.merge`` (see module doc).

    A quantized (QLoRA) base is not merged into: the base is reloaded unquantized from its folder and
    the adapter merged there (:func:`merge_into_fresh_base`).
    """
    if not has_lora(model) or not options.merge:
        return
    hf = _hf_model(model)
    if getattr(hf, "is_quantized", False) or getattr(hf.config, "quantization_config", None) is not None:
        merge_into_fresh_base(model)
    count = merge_lora(model)
    logger.info("merged the LoRA adapter into %d layers", count)


def merge_into_fresh_base(model: SentenceTransformer, dtype: Any = None) -> None:
    """Swap the transformer for a fresh unquantized load of its base folder carrying the same adapter.

    Used before merging a QLoRA adapter: merging into 4-bit weights would re-quantize the sum. The
    attention switch (``is_causal``) of the trained model is kept. Call :func:`merge_lora` afterwards.
    """
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoConfig, AutoModel

    hf = _hf_model(model)
    state = get_peft_model_state_dict(hf, adapter_name=ADAPTER_NAME)
    lora_config = hf.peft_config[ADAPTER_NAME]
    base = hf.config.name_or_path
    config = AutoConfig.from_pretrained(base, local_files_only=True)
    if hasattr(hf.config, "is_causal"):
        config.is_causal = hf.config.is_causal
    if dtype is None:
        quant = getattr(hf.config, "quantization_config", None)
        dtype = getattr(quant, "bnb_4bit_compute_dtype", None) if quant is not None else None
        if isinstance(quant, dict):
            dtype = quant.get("bnb_4bit_compute_dtype")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or hf.dtype)
    fresh = AutoModel.from_pretrained(base, config=config, dtype=dtype, local_files_only=True)
    fresh.add_adapter(lora_config, adapter_name=ADAPTER_NAME)
    result = set_peft_model_state_dict(fresh, state, adapter_name=ADAPTER_NAME)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise EmbedtrainError(f"adapter weights did not fit the reloaded base model: {unexpected[:3]}...")
    device = next(hf.parameters()).device
    model[0].model = fresh.to(device)


def write_adapter_load_kwargs(model: SentenceTransformer, path: str | Path) -> None:
    """After ``model.save(path)`` of an adapter checkpoint: record the base-config overrides it needs.

    sentence-transformers rebuilds an adapter checkpoint from the *base* folder's ``config.json``, so
    ``is_causal`` (bidirectional attention) and the training dtype are written as ``config_kwargs`` /
    ``model_kwargs`` of ``sentence_bert_config.json``, which it passes to ``from_pretrained``.
    No-op for a checkpoint without adapter files.
    """
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        return
    hf = _hf_model(model)
    file = path / "sentence_bert_config.json"
    config = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    config_kwargs = dict(config.get("config_kwargs", {}))
    if hasattr(hf.config, "is_causal"):
        config_kwargs["is_causal"] = bool(hf.config.is_causal)
    model_kwargs = dict(config.get("model_kwargs", {}))
    dtype = getattr(hf, "dtype", None)
    if dtype is not None and not getattr(hf, "is_quantized", False):
        model_kwargs["dtype"] = str(dtype).removeprefix("torch.")
    if config_kwargs:
        config["config_kwargs"] = config_kwargs
    if model_kwargs:
        config["model_kwargs"] = model_kwargs
    file.write_text(json.dumps(config, indent=4), encoding="utf-8")
