"""Small, seeded random models for tests and examples (no downloads, seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(output_dir: str | Path, *, num_layers: int = 2, hidden_size: int = 32,
                     num_heads: int = 2, intermediate_size: int = 64, seed: int = 0,
                     pooling: str = "mean", normalize: bool = False) -> Path:
    """Save a random BERT sentence-transformer with the all-MiniLM-L6-v2 tokenizer to ``output_dir``.

    The weights are seeded, so two calls with the same arguments give the same model.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from embedtrain.models.resolve import resolve_model_path

    output_dir = Path(output_dir)
    tokenizer_dir = resolve_model_path("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=128)
    bert_dir = output_dir / "_hf"
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = Transformer(str(bert_dir), max_seq_length=64)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(output_dir))
    import shutil

    shutil.rmtree(bert_dir)
    return output_dir


#: The vocabulary of the tiny decoder tokenizers.
DECODER_WORDS = ("the a an cat dog bird sits runs flies on mat tree sky red blue green big small what is where who "
         "query passage text about of in to and it was very quick slow brown fox jumps over lazy one two three "
         "instruct given retrieve similar find answer question").split()


def build_tiny_tokenizer(arch: str):
    """A word-level fast tokenizer shaped like the architecture's: Llama prepends BOS and has no pad
    token; Qwen2 has no BOS and pads with its EOS ``<|endoftext|>``. Neither appends EOS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if arch == "llama":
        specials = ["<unk>", "<s>", "</s>"]
        vocab = {tok: i for i, tok in enumerate([*specials, *DECODER_WORDS])}
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                               special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    # Qwen2: transformers rebuilds Qwen2Tokenizer (byte-level BPE) from vocab + merges, so train a tiny one.
    from tokenizers import decoders, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([" " + " ".join(DECODER_WORDS)] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def build_tiny_decoder(output_dir: str | Path, *, arch: str = "llama", num_layers: int = 2, hidden_size: int = 32,
                       seed: int = 0, causal_lm: bool = True) -> Path:
    """Save a random ``arch`` ("llama" or "qwen2") model + tokenizer as a bare Hugging Face folder.

    ``causal_lm`` saves the ``*ForCausalLM`` class (as real LLM checkpoints are); sentence-transformers
    loads its base model either way.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, Qwen2Config, Qwen2ForCausalLM, Qwen2Model

    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer(arch)
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(**common)
        model = (LlamaForCausalLM if causal_lm else LlamaModel)(config)
    elif arch == "qwen2":
        config = Qwen2Config(**common)
        model = (Qwen2ForCausalLM if causal_lm else Qwen2Model)(config)
    else:
        raise ValueError(f"unknown arch {arch}")
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
