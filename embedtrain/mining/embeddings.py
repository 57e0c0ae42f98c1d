"""Embeddings on disk: encoded once, split across processes, memory-mapped, reused across runs.

:func:`encode_to_file` encodes ``n`` texts in fixed blocks (:func:`plan_blocks`: runs of at least :data:`BLOCK`
texts of similar length, longest first, so padding is as low as one sorted pass over the whole corpus); the
blocks are shared out among the processes balanced by characters, and each block's rows are written at their
places in one ``float32`` file (``np.memmap``) that every rank then maps read-only. Because a block is always
encoded as one ``encode`` call whatever the number of processes, the file is the same for 1, 2 or 8 processes
(to the bit on CPU).

The file is named by a fingerprint of the model (its folder's weight and config files: names, sizes, times),
the prompt, the sequence length and the texts (their 128-bit hashes, in order); a ``.json`` written once every
block is in place marks it complete. A later run with the same model and texts (another ``range_max``, other
margins, a cross-encoder...) opens the file instead of encoding again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embedtrain.mining.collective import Collective

logger = logging.getLogger(__name__)

#: Texts per encoded block at least (the unit of work split across processes; :func:`block_size`).
BLOCK = 1024


def model_fingerprint(path: str | Path | None) -> str | None:
    """Names, sizes and modification times of a model folder's weight and config files (None: not a folder)."""
    if path is None or not Path(path).is_dir():
        return None
    root = Path(path).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in
                   (".safetensors", ".bin", ".json", ".txt", ".model", ".pt"))
    parts = [str(root)] + [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def fingerprint(*parts: Any, hashes: np.ndarray) -> str:
    """A short key from ``parts`` (model fingerprint, prompt, length...) and the texts' hashes."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode())
    digest.update(np.ascontiguousarray(hashes).tobytes())
    return digest.hexdigest()[:24]


def open_complete(path: Path, n: int) -> np.ndarray | None:
    """The ``n`` embeddings of a complete file at ``path`` (its ``.json`` written last), memory-mapped; else None."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("rows") != n:
        return None
    logger.info("reusing %d embeddings from %s", n, path)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, meta["dim"])) if n else np.zeros((0, meta["dim"]),
                                                                                                  np.float32)


def gather_to_file(path: Path, source: np.ndarray, index: np.ndarray, rest: np.ndarray, *,
                   collective: Collective, chunk: int = BLOCK) -> tuple[np.ndarray, bool]:
    """Row ``i`` = ``source[index[i]]`` where ``index[i] >= 0``, else the next unused row of ``rest``, in ``path``.

    Used to build the query embeddings from corpus embeddings (queries that are also documents) plus the
    separately encoded rest, without holding either in memory: rank 0 writes the file chunk by chunk, every
    rank then maps it read-only. Returns ``(embeddings, reused)`` as :func:`encode_to_file` does.
    """
    n = len(index)
    done = open_complete(path, n)
    if all(collective.all_gather_object(done is not None)):  # every rank looks before rank 0 writes
        return done, True
    dim = source.shape[1]
    if collective.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        out = np.memmap(tmp, dtype=np.float32, mode="w+", shape=(max(n, 1), dim))
        rest_row = np.cumsum(index < 0) - 1
        for start in range(0, n, chunk):
            ids = index[start:start + chunk]
            take = ids >= 0
            block = np.empty((len(ids), dim), dtype=np.float32)
            block[take] = source[ids[take]]
            block[~take] = rest[rest_row[start:start + chunk][~take]]
            out[start:start + len(ids)] = block
        out.flush()
        del out
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps({"rows": n, "dim": dim, "kind": "gathered"}))
    collective.barrier()
    return (np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim)) if n else
            np.zeros((0, dim), np.float32)), False


def block_size(batch_size: int) -> int:
    """Texts per encoded block: :data:`BLOCK`, or 8 batches when that is more (large GPU batches)."""
    return max(BLOCK, 8 * batch_size)


def plan_blocks(n: int, lengths: np.ndarray | None, size: int, world_size: int) -> tuple[list[np.ndarray], list[int]]:
    """The encoding blocks of ``n`` texts and the process that encodes each.

    Blocks are consecutive runs of ``size`` texts in order of decreasing ``lengths`` (characters; None: in input
    order), so every ``encode`` call holds texts of similar length and pads as little as one call over the
    whole corpus would (sentence-transformers sorts within a call). They do not depend on ``world_size``, which
    keeps the file the same for any number of processes. Blocks go to processes longest-first, each to the one
    with the fewest characters so far (balanced however many blocks there are); ties to the lowest rank.
    """
    lengths = None if lengths is None else np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable") if lengths is not None else np.arange(n)
    blocks = [np.sort(order[s:s + size]) for s in range(0, n, size)]
    cost = [float(lengths[b].sum()) if lengths is not None else float(len(b)) for b in blocks]
    load = [0.0] * world_size
    owner = [0] * len(blocks)
    for b in sorted(range(len(blocks)), key=lambda i: (-cost[i], i)):
        owner[b] = min(range(world_size), key=lambda r: (load[r], r))
        load[owner[b]] += cost[b]
    return blocks, owner


def encode_to_file(model, texts: Callable[[np.ndarray], list[str]], n: int, path: Path, *, kind: str,
                   prompt: str | None, batch_size: int, collective: Collective, lengths: np.ndarray | None = None,
                   encode_fn: Callable | None = None, advance: Callable[[int], None] | None = None,
                   precision=None) -> tuple[np.ndarray, bool]:
    """Embeddings of the ``n`` texts (``texts(ids)`` gives those texts) in ``path``, memory-mapped read-only.

    ``lengths`` (characters per text) lets :func:`plan_blocks` group texts of similar length. Returns
    ``(embeddings, reused)``; ``reused`` is True when a complete file was already there. ``encode_fn``
    (``(model, texts, kind, prompt, batch_size) -> array``) defaults to
    :func:`embedtrain.mining.search.encode_texts`, in ``precision`` (:mod:`embedtrain.models.precision`; None:
    the model as it is).
    """
    from embedtrain.mining.search import encode_texts

    encode = encode_fn or (lambda m, t, k, p, b: encode_texts(m, t, kind=k, prompt=p, batch_size=b,
                                                             chunk_size=len(t) or 1, precision=precision))
    meta_path = path.with_suffix(".json")
    done = open_complete(path, n)
    if done is not None:
        if advance is not None:
            advance(n)
        return done, True
    dim = int(np.asarray(encode(model, texts(np.arange(min(n, 1))) or ["x"], kind, prompt, batch_size)).shape[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    if collective.rank == 0:
        np.memmap(tmp, dtype=np.float32, mode="w+", shape=(max(n, 1), dim)).flush()
    collective.barrier()
    if n:
        out = np.memmap(tmp, dtype=np.float32, mode="r+", shape=(n, dim))
        blocks, owner = plan_blocks(n, lengths, block_size(batch_size), collective.world_size)
        mine = [ids for ids, rank in zip(blocks, owner) if rank == collective.rank]
        scale = n / max(sum(len(ids) for ids in mine), 1)  # the main process's bar stands for all processes
        for ids in mine:
            out[ids] = np.asarray(encode(model, texts(ids), kind, prompt, batch_size), dtype=np.float32)
            if advance is not None:
                advance(round(len(ids) * scale))
        out.flush()
        del out
    collective.barrier()
    if collective.rank == 0:
        os.replace(tmp, path)
        meta_path.write_text(json.dumps({"rows": n, "dim": dim, "kind": kind, "prompt": prompt}))
    collective.barrier()
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim)) if n else np.zeros((0, dim), np.float32), False
