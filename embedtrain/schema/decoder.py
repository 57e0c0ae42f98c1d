"""Model options for turning a model (usually a decoder LLM) into an embedder: fields of a recipe's ``model:``.

::

    model:
      name_or_path: SmolLM2-135M-Instruct
      max_seq_length: 128
      dtype: bfloat16              # auto | float32 | bfloat16 | float16  (saved in config.json)
      attn_implementation: sdpa    # eager | sdpa | flash_attention_2 ... (speed only; not saved)
      pooling: last_token          # mean | cls | last_token | latent_attention
      bidirectional: true          # drop the causal mask, in training and in the saved checkpoint
      padding_side: right          # left | right (pooling works with either)
      gradient_checkpointing: true
      latent_attention: {num_latents: 512, num_heads: 8}     # only with pooling: latent_attention
      lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear, merge: true}

Every option left unset keeps what the checkpoint already does, so a recipe without them loads its model
exactly as before. How the options are applied is :mod:`embedtrain.models.decoder`; this module holds only
their types and the rules between them (pydantic, no feature package).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedtrain.schema.base import StrictModel
from embedtrain.schema.tasks import LoraSpec

#: Pooling names a recipe may give (``last_token`` is sentence-transformers' ``lasttoken``).
PoolingName = Literal["mean", "cls", "last_token", "latent_attention"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]

#: The ``model:`` fields that change how a model is loaded (the decoder options of this module).
MODEL_OPTION_FIELDS: tuple[str, ...] = ("dtype", "attn_implementation", "pooling", "bidirectional", "padding_side",
                                        "gradient_checkpointing", "latent_attention", "lora")


class LatentAttentionConfig(StrictModel):
    """NV-Embed-style latent-attention pooling (Lee et al., 2024, "NV-Embed").

    Every token's hidden state attends (as the query) to a trainable array of ``num_latents`` latent
    vectors (keys and values), passes an MLP, and the results are mean-pooled over the real tokens.
    NV-Embed uses 512 latents and 8 heads on a 4096-wide Mistral. ``num_heads`` must divide the model width.
    """

    num_latents: int = Field(default=512, gt=0)
    num_heads: int = Field(default=8, gt=0)
    #: Width of the MLP after the cross-attention (default: 4 x the model width).
    intermediate_size: int | None = Field(default=None, gt=0)


class ModelLoraConfig(LoraSpec):
    """One peft LoRA adapter over the whole transformer, for any recipe (encoders included).

    Not the per-task adapters of a ``tasks:`` recipe. ``target_modules: all-linear`` (the default) adapts
    every linear layer of the transformer blocks (peft's ``"all-linear"``: q/k/v/o/gate/up/down on Llama;
    query/key/value/dense... on BERT); a list names module-name suffixes (``[q_proj, v_proj]``); ``null``
    lets peft pick its default for the architecture.

    ``merge: true`` (default) folds ``W + alpha/r * B A`` into the weights at save, so the checkpoint is a
    plain model; ``merge: false`` keeps the adapter files (``adapter_config.json`` +
    ``adapter_model.safetensors``), which refer to the base model's folder: smaller, but that folder must
    stay where it is, and it cannot keep ``bidirectional: true`` (the base folder's ``config.json`` decides
    at load).

    ``quantization: 4bit`` (or ``8bit``) is QLoRA: the frozen base is loaded through bitsandbytes, which
    needs a CUDA GPU; elsewhere the recipe is refused before anything loads. A merged QLoRA model is
    merged into a fresh unquantized copy of the base.
    """

    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] | None = "all-linear"  # type: ignore[assignment]
    merge: bool = True
    quantization: Literal["4bit", "8bit"] | None = None

    def to_peft(self):
        """The equivalent :class:`peft.LoraConfig` (feature extraction: no task head)."""
        from peft import LoraConfig

        target = self.target_modules if isinstance(self.target_modules, str) or self.target_modules is None \
            else list(self.target_modules)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=target,
                          bias="none", use_rslora=self.use_rslora)


class ModelOptions(StrictModel):
    """How a model is loaded and pooled (the decoder-LLM options; mixed into the recipe's ``model:``).

    * ``dtype``: the weights' dtype (``auto``: the one in the checkpoint's ``config.json``); saved in
      ``config.json``, so a plain ``SentenceTransformer(path)`` reloads the same dtype.
    * ``attn_implementation``: ``eager``, ``sdpa``, ``flash_attention_2``...; a speed choice that does not
      change the maths (not saved: a reload uses transformers' default, ``sdpa``).
    * ``pooling``: ``mean``; ``cls`` (the first token; sensible only with ``bidirectional``); ``last_token``
      (an EOS token is appended by the tokenizer and its hidden state is the embedding); or
      ``latent_attention`` (trainable NV-Embed pooling, :class:`LatentAttentionConfig`). Unset keeps the
      checkpoint's pooling (a bare Hugging Face folder gets sentence-transformers' default: last token for
      ``*ForCausalLM`` checkpoints, mean otherwise).
    * ``bidirectional``: ``true`` sets ``config.is_causal = False`` (transformers >= 5.2): every token attends
      to every other, in training and when the saved checkpoint is reloaded. ``false`` turns causal attention
      back on for a checkpoint saved bidirectional. Unset keeps the checkpoint's. A model that is not causal
      (BERT) is unchanged either way.
    * ``padding_side``: the tokenizer's padding side; unset keeps the tokenizer's.
    * ``gradient_checkpointing``: trade compute for memory (non-reentrant activation checkpointing, so
      LoRA-only training needs no input-gradient hook). Use this or ``training.gradient_checkpointing``,
      not both.
    * ``lora``: one LoRA adapter over the whole model (:class:`ModelLoraConfig`).
    """

    dtype: DtypeName | None = None
    attn_implementation: str | None = None
    pooling: PoolingName | None = None
    bidirectional: bool | None = None
    padding_side: Literal["left", "right"] | None = None
    gradient_checkpointing: bool | None = None
    latent_attention: LatentAttentionConfig | None = None
    lora: ModelLoraConfig | None = None

    def option_problems(self) -> list[tuple[str, tuple[str, ...]]]:
        """Rules between the options, as ``(message, location inside model:)`` pairs ([] when consistent).

        Not a pydantic validator, so that the recipe can report each problem at the line of its key.
        """
        problems: list[tuple[str, tuple[str, ...]]] = []
        if self.latent_attention is not None and self.pooling != "latent_attention":
            problems.append(("latent_attention options are set but pooling is not 'latent_attention'; set "
                             "pooling: latent_attention or remove them", ("latent_attention",)))
        if self.bidirectional and self.lora is not None and not self.lora.merge:
            problems.append(("lora.merge: false keeps an adapter whose base model's config.json decides the "
                             "attention at load, so bidirectional: true would be lost; use lora.merge: true",
                             ("lora", "merge")))
        return problems

    def decoder_options_set(self) -> bool:
        """Whether any option changes how the model is loaded (else the plain loader runs)."""
        return any(getattr(self, name) is not None for name in MODEL_OPTION_FIELDS)

    def loader_options(self) -> ModelOptions:
        """Only the options (a ``ModelConfig`` carries more fields), as a :class:`ModelOptions`."""
        return ModelOptions.model_validate({name: getattr(self, name) for name in MODEL_OPTION_FIELDS})


def check_model_options(recipe, *, allowed: tuple[str, ...] = MODEL_OPTION_FIELDS, stage: str = "") -> None:
    """Located errors for the model options of ``recipe`` (a ``LocatedModel`` with ``model`` and ``training``).

    ``allowed`` names the options the recipe's stage can apply; setting another is an error naming the stage.
    """
    model = recipe.model
    for name in MODEL_OPTION_FIELDS:
        if name not in allowed and getattr(model, name) is not None:
            raise recipe.error(f"a {stage} recipe cannot apply model.{name}" + (
                "; the tasks' own LoRA adapters train instead (tasks[i].lora)" if name == "lora" else ""),
                "model", name)
    for message, loc in model.option_problems():
        raise recipe.error(message, "model", *loc)
    if model.gradient_checkpointing is not None and "gradient_checkpointing" in recipe.training:
        raise recipe.error("gradient checkpointing is set twice; keep model.gradient_checkpointing (non-reentrant, "
                           "works with LoRA) and remove training.gradient_checkpointing", "training",
                           "gradient_checkpointing")
