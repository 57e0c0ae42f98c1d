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
