"""Pooling for decoder embedders.

``mean``, ``cls`` and ``last_token`` are sentence-transformers' own :class:`Pooling` modes
(``lasttoken`` there), so checkpoints using them load with a plain ``SentenceTransformer(path)``.

:class:`LatentAttentionPooling` is NV-Embed's trainable pooling (Lee et al., 2024). It cannot be built
from sentence-transformers' modules (it needs a softmax over latents per head and residual
connections), so it is a custom module: ``modules.json`` names
``embedtrain.models.pooling.LatentAttentionPooling``. embedtrain loads such checkpoints without
``trust_remote_code`` (the class is listed in :data:`embedtrain.models.trust.EMBEDTRAIN_MODULES`, installed
code handed to sentence-transformers directly); a plain ``SentenceTransformer(path)`` outside embedtrain
imports a class outside its own package only with ``trust_remote_code=True`` (and embedtrain installed).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from sentence_transformers.base.modules.module import Module
from sentence_transformers.sentence_transformer.modules import Pooling
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: Recipe pooling name -> sentence-transformers ``Pooling`` mode (``latent_attention`` is ours).
ST_POOLING_MODES = {"mean": "mean", "cls": "cls", "last_token": "lasttoken"}

LATENT_POOLING_CLASS = "embedtrain.models.pooling.LatentAttentionPooling"


class LatentAttentionPooling(Module):
    """NV-Embed latent-attention pooling: tokens attend to a trainable latent array, then mean pooling.

    For each token hidden state ``h`` (the query) and the trainable latents ``L`` (keys and values)::

        a = h + W_o MultiHead(q=W_q h, k=W_k L, v=W_v L)
        o = a + MLP(a)                      # Linear -> GELU -> Linear
        embedding = masked mean of o over the real tokens

    Each token is transformed independently (the latents are shared), so padding cannot leak into a
    sentence's embedding. ``W_o`` and the MLP's output layer start at zero: an untrained module *is*
    mean pooling, so attaching it to a pretrained embedder does not scramble it before training (a
    choice of ours; NV-Embed trains it jointly from random initialisation).

    Args:
        embedding_dimension: Width of the token embeddings.
        num_latents: Number of trainable latent vectors (NV-Embed: 512).
        num_heads: Attention heads (must divide ``embedding_dimension``; NV-Embed: 8).
        intermediate_size: Hidden width of the MLP (default ``4 * embedding_dimension``).
        include_prompt: If ``False``, prompt tokens are left out of the mean (like ``Pooling``).

    Inputs: ``token_embeddings`` and ``attention_mask``; output: ``sentence_embedding``.

    Example::

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Transformer
        transformer = Transformer("path/to/llm")
        pooling = LatentAttentionPooling(transformer.get_embedding_dimension(), num_latents=64)
        model = SentenceTransformer(modules=[transformer, pooling])
        model.save("out")
        embedtrain.models.load_model("out")                   # embedtrain: no flag needed
        SentenceTransformer("out", trust_remote_code=True)   # elsewhere (embedtrain installed)

    Reference: Lee et al., "NV-Embed: Improved Techniques for Training LLMs as Generalist Embedding
    Models", arXiv:2405.17428.
    """

    config_keys = ["embedding_dimension", "num_latents", "num_heads", "intermediate_size", "include_prompt"]

    def __init__(self, embedding_dimension: int, num_latents: int = 512, num_heads: int = 8,
                 intermediate_size: int | None = None, include_prompt: bool = True) -> None:
        super().__init__()
        if embedding_dimension % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the embedding dimension {embedding_dimension}")
        self.embedding_dimension = embedding_dimension
        self.num_latents = num_latents
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size or 4 * embedding_dimension
        self.include_prompt = include_prompt
        d = embedding_dimension
        self.latents = nn.Parameter(torch.randn(num_latents, d) * d**-0.5)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, self.intermediate_size), nn.GELU(),
                                 nn.Linear(self.intermediate_size, d))
        nn.init.zeros_(self.o_proj.weight)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def transform_tokens(self, token_embeddings: Tensor) -> Tensor:
        """The per-token part (cross-attention to the latents + MLP), shape preserved."""
        batch, length, d = token_embeddings.shape
        heads, head_dim = self.num_heads, d // self.num_heads
        h = token_embeddings.to(self.latents.dtype)
        q = self.q_proj(h).view(batch, length, heads, head_dim).transpose(1, 2)        # B H T hd
        k = self.k_proj(self.latents).view(self.num_latents, heads, head_dim).transpose(0, 1)  # H L hd
        v = self.v_proj(self.latents).view(self.num_latents, heads, head_dim).transpose(0, 1)
        attended = torch.nn.functional.scaled_dot_product_attention(
            q, k.unsqueeze(0).expand(batch, -1, -1, -1), v.unsqueeze(0).expand(batch, -1, -1, -1))
        attended = attended.transpose(1, 2).reshape(batch, length, d)
        a = h + self.o_proj(attended)
        return a + self.mlp(a)

    def forward(self, features: dict[str, Tensor | Any], **kwargs) -> dict[str, Tensor | Any]:
        tokens = features["token_embeddings"]
        if "cu_seq_lens_q" in features:
            raise ValueError("LatentAttentionPooling needs padded inputs; load the model with unpad_inputs=False")
        mask = features.get("attention_mask")
        if mask is None or mask.size(-1) != tokens.size(1):
            mask = torch.ones(tokens.shape[:-1], device=tokens.device, dtype=torch.int64)
        if not self.include_prompt and "prompt_length" in features:
            pl = features["prompt_length"]
            prompt_length = int(pl[0].item()) if isinstance(pl, torch.Tensor) else int(pl)
            if prompt_length:
                mask = Pooling._exclude_prompt_from_mask(mask, prompt_length)
        out = self.transform_tokens(tokens)
        weights = mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        features["sentence_embedding"] = pooled.to(tokens.dtype)
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             init_defaults: dict[str, Any] | None = None, **kwargs) -> LatentAttentionPooling:
        hub_kwargs = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder,
                      "revision": revision, "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path=model_name_or_path, **hub_kwargs)
        for key, value in (init_defaults or {}).items():
            config.setdefault(key, value)
        module = cls(**config)
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=module, **hub_kwargs)


def make_pooling(name: str, embedding_dimension: int, *, latent_options: dict[str, Any] | None = None,
                 include_prompt: bool = True) -> Module:
    """The pooling module for a recipe pooling ``name`` (see :data:`ST_POOLING_MODES`)."""
    if name == "latent_attention":
        return LatentAttentionPooling(embedding_dimension, include_prompt=include_prompt, **(latent_options or {}))
    if name not in ST_POOLING_MODES:
        raise ValueError(f"unknown pooling '{name}'; choose one of {[*ST_POOLING_MODES, 'latent_attention']}")
    return Pooling(embedding_dimension, pooling_mode=ST_POOLING_MODES[name], include_prompt=include_prompt)
