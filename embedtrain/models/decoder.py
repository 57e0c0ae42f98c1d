"""Build a sentence-transformer from a (decoder) model folder with the options of :class:`ModelOptions`.

Everything is stored where a plain ``SentenceTransformer(path)`` already looks, so a saved checkpoint
encodes exactly as it did during training without embedtrain and without ``trust_remote_code``
(latent-attention pooling excepted: embedtrain loads it without the flag, a plain load needs it, see
:mod:`embedtrain.models.pooling`):

* **bidirectional attention** is transformers' own switch ``config.is_causal = False`` (transformers >=
  5.2 turns the causal mask into a padding-only mask and passes ``is_causal=False`` to the attention
  kernels). It is written to ``config.json``. Whether an architecture honours it is checked with a
  four-token probe when the option is set, so an architecture that ignores it fails loudly.
* **EOS for last-token pooling** is appended by the tokenizer's post-processor (saved in
  ``tokenizer.json``), so it survives truncation (special tokens are added after truncating) and reloads.
* **pooling** is sentence-transformers' ``Pooling`` (``mean``/``cls``/``lasttoken``), which finds the
  last real token from the attention mask, so either padding side works.
* **padding side** and **pad token** live in ``tokenizer_config.json``; **dtype** in ``config.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.models.checkpointing import enable_checkpointing
from embedtrain.models.pooling import LatentAttentionPooling, make_pooling
from embedtrain.schema.decoder import ModelOptions

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

logger = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class ModelOptionError(RecipeError):
    """A model option cannot be applied to this model (e.g. bidirectional on an architecture that ignores it)."""


def model_kwargs_for(options: ModelOptions) -> dict[str, Any]:
    """``model_kwargs`` for ``from_pretrained`` (dtype, attention implementation, quantization)."""
    import torch

    kwargs: dict[str, Any] = {}
    if options.dtype is not None:
        kwargs["dtype"] = "auto" if options.dtype == "auto" else getattr(torch, _DTYPES[options.dtype])
    if options.attn_implementation is not None:
        kwargs["attn_implementation"] = options.attn_implementation
    if options.lora is not None and options.lora.quantization is not None:
        from embedtrain.models.lora import quantization_config

        kwargs["quantization_config"] = quantization_config(options.lora, kwargs.get("dtype"))
    return kwargs


def build_decoder_embedder(name_or_path: str | Path, options: ModelOptions | None = None, *,
                           max_seq_length: int | None = None, device: str | None = None,
                           trust_remote_code: bool = False, **option_fields: Any) -> SentenceTransformer:
    """Load ``name_or_path`` (a sentence-transformers or bare Hugging Face folder) as an embedder.

    ``options`` (or its fields as keywords: ``pooling="last_token", bidirectional=True``...) say how; see
    :class:`~embedtrain.schema.decoder.ModelOptions` (a recipe's ``model:`` section is one). The folder must
    be local (resolve short names first). Nothing from the folder runs unless ``trust_remote_code``
    (embedtrain's own module classes, latent-attention pooling included, load without it). Returns a
    ``SentenceTransformer`` whose ``save()`` writes a checkpoint that a plain ``SentenceTransformer(path)``
    reloads with identical embeddings (call :func:`embedtrain.models.lora.finalize_lora` before saving
    when ``options.lora`` is set).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    from embedtrain.models.resolve import load_model
    from embedtrain.models.trust import check_model_code

    options = ModelOptions.model_validate({**options_dict(options), **option_fields})
    problems = options.option_problems()
    if problems:
        message, loc = problems[0]
        raise ModelOptionError(message, field="model." + ".".join(loc))
    path = Path(name_or_path)
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise CheckpointError("folder holds no model (no modules.json or config.json)", file=path)
    if options.lora is not None and options.lora.quantization is not None:
        from embedtrain.models.lora import check_quantization_available

        check_quantization_available(options.lora)

    model_kwargs = model_kwargs_for(options)
    if (path / "modules.json").is_file():
        model = load_model(path, device=device, trust_remote_code=trust_remote_code,
                           **({"model_kwargs": model_kwargs} if model_kwargs else {}))
    else:
        check_model_code(path, trust_remote_code=trust_remote_code)
        hub = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        transformer = Transformer(str(path), model_kwargs={**model_kwargs, **hub}, processor_kwargs=hub,
                                  config_kwargs=hub)
        pooling = make_pooling(options.pooling or _default_pooling(transformer), transformer.get_embedding_dimension(),
                               latent_options=_latent_kwargs(options))
        model = SentenceTransformer(modules=[transformer, pooling], device=device)

    transformer = model[0]
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    if options.bidirectional is not None:
        set_bidirectional(transformer, options.bidirectional)
    if options.pooling is not None:
        _replace_pooling(model, options)
    pooling_name = pooling_of(model)
    configure_tokenizer(transformer, last_token=pooling_name == "last_token", padding_side=options.padding_side)
    if pooling_name == "latent_attention":
        transformer.unpad_inputs = False  # saved; the latent pooling reads padded token embeddings
    if pooling_name == "cls" and is_causal(transformer):
        logger.warning("cls pooling on a causal decoder embeds the first token, which sees nothing else; "
                       "set bidirectional: true or use last_token/mean pooling")
    if options.gradient_checkpointing:
        enable_checkpointing(transformer.model)
    if options.lora is not None:
        from embedtrain.models.lora import attach_lora

        attach_lora(model, options.lora)
    return model


def check_recipe_model(recipe, model_shape: tuple[int, int] | None) -> None:
    """The checks of a recipe's model options that need no loaded model (part of ``embedtrain validate``).

    QLoRA where it cannot run, and latent-attention heads that do not divide the model width; errors are
    located at the recipe line of the option.
    """
    from embedtrain.models.lora import QuantizationUnavailableError, quantization_problem
    from embedtrain.schema.decoder import LatentAttentionConfig

    options = recipe.model
    if options.lora is not None:
        problem = quantization_problem(options.lora)
        if problem is not None:
            raise recipe.error(problem, "model", "lora", "quantization", kind=QuantizationUnavailableError)
    if options.pooling == "latent_attention" and model_shape is not None:
        heads = (options.latent_attention or LatentAttentionConfig()).num_heads
        if model_shape[1] % heads:
            raise recipe.error(f"latent-attention pooling: num_heads={heads} must divide the model width "
                               f"{model_shape[1]}", "model", "latent_attention", "num_heads", kind=ModelOptionError)


def options_dict(options: Any) -> dict[str, Any]:
    """The model options of ``options`` (a :class:`ModelOptions`, a recipe's ``ModelConfig`` or None) as a dict."""
    if options is None:
        return {}
    from embedtrain.schema.decoder import MODEL_OPTION_FIELDS

    return {name: getattr(options, name) for name in MODEL_OPTION_FIELDS}


def _latent_kwargs(options: ModelOptions) -> dict[str, Any]:
    return options.latent_attention.model_dump() if options.latent_attention is not None else {}


def _default_pooling(transformer: Transformer) -> str:
    """sentence-transformers' own default for a bare HF folder: last token for causal LMs, else mean."""
    architectures = getattr(transformer.config, "architectures", None) or []
    causal_lm = bool(architectures) and architectures[0].endswith("ForCausalLM")
    return "last_token" if causal_lm and getattr(transformer.config, "is_causal", True) else "mean"


def pooling_of(model: SentenceTransformer) -> str | None:
    """The recipe pooling name of ``model``'s pooling module (None when it has none we know)."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    for module in list(model)[1:]:
        if isinstance(module, LatentAttentionPooling):
            return "latent_attention"
        if isinstance(module, Pooling):
            mode = module.pooling_mode
            return {"mean": "mean", "cls": "cls", "lasttoken": "last_token"}.get(mode if isinstance(mode, str) else "")
    return None


def _replace_pooling(model: SentenceTransformer, options: ModelOptions) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling

    if pooling_of(model) == options.pooling:
        current = next(m for m in list(model)[1:] if isinstance(m, (Pooling, LatentAttentionPooling)))
        wanted = _latent_kwargs(options)
        if not isinstance(current, LatentAttentionPooling) or all(
                getattr(current, k) == v for k, v in wanted.items() if v is not None):
            return  # keep the checkpoint's (possibly trained) pooling
        logger.warning("replacing the checkpoint's latent-attention pooling (%s) by an untrained one (%s)",
                       {k: getattr(current, k) for k in wanted}, wanted)
    names = list(model._modules)
    for index, name in enumerate(names[1:], start=1):
        module = model._modules[name]
        if isinstance(module, (Pooling, LatentAttentionPooling)):
            include_prompt = getattr(module, "include_prompt", True)
            new = make_pooling(options.pooling, model[0].get_embedding_dimension(),
                               latent_options=_latent_kwargs(options), include_prompt=include_prompt)
            model._modules[name] = new.to(next(model[0].parameters()).device)
            return
    raise CheckpointError(f"cannot set pooling '{options.pooling}': the model has no pooling module "
                          f"(modules: {[type(model._modules[n]).__name__ for n in names]})")


# -- attention ---------------------------------------------------------------------------------------
def is_causal(transformer: Transformer) -> bool:
    """Whether the transformer currently attends causally (a decoder without ``is_causal=False``)."""
    if getattr(transformer.model.config, "is_causal", True) is False:
        return False
    return any(getattr(m, "is_causal", False) is True for m in transformer.model.modules())


def set_bidirectional(transformer: Transformer, bidirectional: bool = True, *, check: bool = True) -> None:
    """Switch a decoder between causal and bidirectional attention (``config.is_causal``, saved with it).

    With ``check`` a four-token probe verifies that the architecture honours the switch: with
    bidirectional attention the first token's output must change when the last token changes, and with
    causal attention it must not. Raises :class:`ModelOptionError` otherwise.
    """
    config = transformer.model.config
    has_causal_layers = any(getattr(m, "is_causal", False) is True for m in transformer.model.modules())
    if not has_causal_layers:
        if bidirectional:
            logger.info("%s is not a causal model; bidirectional: true changes nothing",
                        type(transformer.model).__name__)
        return
    config.is_causal = not bidirectional
    if check:
        changed = first_token_sees_later_tokens(transformer)
        if changed != bidirectional:
            raise ModelOptionError(
                f"{config.model_type}: setting config.is_causal={not bidirectional} did not change the attention "
                f"(first token {'ignores' if bidirectional else 'sees'} later tokens); this architecture does not "
                "support the bidirectional switch in the installed transformers")


def first_token_sees_later_tokens(transformer: Transformer) -> bool:
    """Probe: does the first position's hidden state change when only the last input token changes?"""
    import torch

    model = transformer.model
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    ids = torch.tensor([[3 % vocab, 5 % vocab, 7 % vocab, 11 % vocab]], device=device)
    other = ids.clone()
    other[0, -1] = 13 % vocab
    mask = torch.ones_like(ids)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a = model(input_ids=ids, attention_mask=mask).last_hidden_state[0, 0].float()
            b = model(input_ids=other, attention_mask=mask).last_hidden_state[0, 0].float()
    finally:
        model.train(was_training)
    return not torch.allclose(a, b, rtol=0, atol=1e-6)


# -- tokenizer ---------------------------------------------------------------------------------------
def configure_tokenizer(transformer: Transformer, *, last_token: bool, padding_side: str | None = None) -> None:
    """Pad token, padding side and (for last-token pooling) an appended EOS token, all saved with the tokenizer."""
    tokenizer = transformer.tokenizer
    if tokenizer is None:
        raise CheckpointError("the model has no tokenizer")
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise CheckpointError("the tokenizer has neither a pad, EOS nor UNK token to pad with")
        tokenizer.pad_token = fallback
        logger.info("tokenizer has no pad token; padding with %r (masked out by the attention mask)", fallback)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if last_token:
        append_eos(tokenizer)


def appends_eos(tokenizer) -> bool:
    """Whether ``tokenizer("x")`` already ends with the EOS token."""
    if tokenizer.eos_token_id is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def append_eos(tokenizer) -> None:
    """Make ``tokenizer`` append its EOS token to every text (last-token pooling reads that position).

    The tokenizer's post-processor (``tokenizer.json``) is edited: a ``TemplateProcessing`` gets the EOS
    after each ``$A``/``$B``; a ``ByteLevel`` one (or none) gets such a template after it. Special tokens
    are added after truncation, so a truncated text still ends with EOS. Idempotent.
    """
    import json

    from tokenizers import Tokenizer

    if tokenizer.eos_token is None:
        raise CheckpointError("last_token pooling needs an EOS token, but the tokenizer has none")
    if appends_eos(tokenizer):
        return
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(f"{type(tokenizer).__name__} is not a fast tokenizer; cannot append EOS for "
                              "last_token pooling")
    state = json.loads(backend.to_str())
    state["post_processor"] = _post_processor_with_eos(state.get("post_processor"), tokenizer.eos_token,
                                                       tokenizer.eos_token_id)
    backend.post_processor = Tokenizer.from_str(json.dumps(state)).post_processor
    if not appends_eos(tokenizer):
        raise CheckpointError("could not make the tokenizer append its EOS token")


def _eos_template(eos: str, eos_id: int) -> dict:
    def seq(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    def special(type_id: int) -> dict:
        return {"SpecialToken": {"id": eos, "type_id": type_id}}

    return {"type": "TemplateProcessing", "single": [seq("A", 0), special(0)],
            "pair": [seq("A", 0), special(0), seq("B", 1), special(1)],
            "special_tokens": {eos: {"id": eos, "ids": [eos_id], "tokens": [eos]}}}


def _post_processor_with_eos(processor: dict | None, eos: str, eos_id: int) -> dict:
    """A post-processor JSON that does what ``processor`` does and then appends ``eos``."""
    if processor is None:
        return _eos_template(eos, eos_id)
    kind = processor.get("type")
    if kind == "TemplateProcessing":
        edited = dict(processor)
        for key in ("single", "pair"):
            items = []
            for item in processor[key]:
                items.append(item)
                if "Sequence" in item:
                    items.append({"SpecialToken": {"id": eos, "type_id": item["Sequence"]["type_id"]}})
            edited[key] = items
        edited["special_tokens"] = {**processor.get("special_tokens", {}),
                                    eos: {"id": eos, "ids": [eos_id], "tokens": [eos]}}
        return edited
    if kind == "Sequence":
        children = processor["processors"]
        if any(child.get("type") == "TemplateProcessing" for child in children):
            return {**processor, "processors": [_post_processor_with_eos(c, eos, eos_id)
                                                if c.get("type") == "TemplateProcessing" else c for c in children]}
        return {**processor, "processors": [*children, _eos_template(eos, eos_id)]}
    if kind == "ByteLevel":
        return {"type": "Sequence", "processors": [processor, _eos_template(eos, eos_id)]}
    raise CheckpointError(f"cannot append EOS with a {kind} post-processor (it adds its own end token); "
                          "use mean pooling or a tokenizer that ends texts with EOS")
