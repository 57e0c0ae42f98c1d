"""Teacher embeddings computed once and kept on disk; teacher scores of text pairs computed once and cached.

Embedding store
---------------
:func:`precompute_teacher_embeddings` encodes every distinct text of a dataset with one or several
teachers and writes, into one folder::

    index.json                     fingerprint, teachers (name, weights fingerprint, dim, offset, weight,
                                   prompts), dtype, rows, the embeddings file name, and text key -> row
    embeddings-<fp>-<rows>.npy     (rows, sum of teacher dims), opened memory-mapped (np.load mmap_mode="r")

A text's key is a hash of its kind (``query`` / ``document``, which selects the teacher's prompt) and
its text (:func:`text_key`). Several teachers are combined by concatenating each teacher's
L2-normalised vector scaled by ``sqrt(w_k / sum(w))``: the result has unit norm and its dot products
are the weight-averaged cosine similarities of the teachers (plain concatenation = equal weights).

The store is reused as long as its fingerprint (each teacher's weights, prompts, max length, weight,
and the storage dtype) is unchanged; new texts are encoded and appended (old rows keep their row
numbers); a different fingerprint re-encodes everything. Under ``torch.distributed`` (e.g. an
``accelerate launch``) every rank encodes a contiguous slice of the missing texts and saves it as a
shard; rank 0 assembles the shards into the memmap and writes the index; every rank then opens the same
store. The folder must be on a file system all ranks see (one machine, or a shared mount).

Pair scores
-----------
:func:`score_pairs` gives a teacher score to each (query, document) pair, from a
:class:`CrossEncoderScorer` or a :class:`BiEncoderScorer`; a :class:`PairScoreCache` (SQLite, one file
per scorer fingerprint) keeps every score, so each pair is scored once across epochs and runs. It is
sharded across ranks like the embedding store.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedtrain.errors import DataError

logger = logging.getLogger(__name__)

Kind = Literal["query", "document"]
KINDS = ("query", "document")
STORE_VERSION = 1
INDEX_FILE = "index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx")


# ---------------------------------------------------------------------------------------------- keys and fingerprints

def text_key(text: str, kind: Kind = "document") -> str:
    """Stable 80-bit hex key of ``(kind, text)``; the kind picks the teacher's prompt."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got '{kind}'")
    return hashlib.blake2b(f"{kind}\x00{text}".encode(), digest_size=10).hexdigest()


def pair_key(query: str, document: str) -> str:
    """Stable 128-bit hex key of a (query, document) pair."""
    return hashlib.blake2b(f"{query}\x00\x00{document}".encode(), digest_size=16).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class DigestMemo:
    """SHA-256 of files remembered by (path, size, mtime) in a JSON file, so a large teacher is hashed once.

    A file whose size or modification time changed is hashed again. Only the process that calls
    :meth:`save` (rank 0) writes the memo.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}
        self.dirty = False
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.entries = {}

    def digest(self, file: Path) -> str:
        stat = file.stat()
        key = str(file.resolve())
        known = self.entries.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        value = _file_digest(file)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, value]
        self.dirty = True
        return value

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries), encoding="utf-8")
        os.replace(tmp, self.path)
        self.dirty = False


def model_fingerprint(model: Any, memo: DigestMemo | None = None) -> str:
    """SHA-256 of a model: of every file of its folder (a path), or of its weights (a loaded module).

    Folder: relative path, size and content hash of each file (config and weight files alike), so any
    change of weights, pooling or config changes it; ``memo`` skips re-hashing files whose size and
    modification time are unchanged. Loaded model: each state-dict tensor's name, dtype, shape and bytes,
    plus the module classes.
    """
    h = hashlib.sha256()
    if isinstance(model, (str, Path)):
        root = Path(model)
        if not root.exists():
            raise DataError(f"teacher model folder {root} does not exist", field="teachers")
        files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts
                       and "__pycache__" not in p.parts)
        for p in files:
            digest = memo.digest(p) if memo is not None else _file_digest(p)
            h.update(f"{p.relative_to(root).as_posix()}\x00{p.stat().st_size}\x00{digest}\n".encode())
        return h.hexdigest()
    import torch

    h.update(" ".join(type(m).__name__ for m in model.modules()).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\x00{t.dtype}\x00{tuple(t.shape)}\n".encode())
        h.update((t.view(torch.uint8) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- distributed helpers

def _dist():
    """``(rank, world_size, torch.distributed or None)`` of the current process group."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0, 1, None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def _barrier(dist) -> None:
    if dist is not None:
        dist.barrier()


def _my_slice(n: int, rank: int, world: int) -> slice:
    return slice(n * rank // world, n * (rank + 1) // world)


# ---------------------------------------------------------------------------------------------- teachers

@dataclass(frozen=True)
class TeacherSpec:
    """One teacher of an embedding store.

    ``model`` is a local folder or an already loaded ``SentenceTransformer``; ``weight`` its share of
    the combined similarity; prompts are prepended to queries / documents by ``encode``.
    """

    name: str
    model: Any
    weight: float = 1.0
    query_prompt: str | None = None
    document_prompt: str | None = None
    max_seq_length: int | None = None
    batch_size: int = 32
    trust_remote_code: bool = False

    def prompt(self, kind: Kind) -> str | None:
        return self.query_prompt if kind == "query" else self.document_prompt

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "query_prompt": self.query_prompt,
                "document_prompt": self.document_prompt, "max_seq_length": self.max_seq_length}


def _check_teachers(teachers: Sequence[TeacherSpec]) -> None:
    if not teachers:
        raise DataError("at least one teacher is needed", field="teachers")
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise DataError(f"teacher names must be unique, got {names}", field="teachers")
    for i, t in enumerate(teachers):
        if not t.weight > 0:
            raise DataError(f"teacher '{t.name}' has weight {t.weight}; weights must be > 0",
                            field=f"teachers[{i}].weight")


def _load_teacher(spec: TeacherSpec, device: str | None):
    """``(model, loaded_here)``: the spec's model object, or the folder loaded without network access."""
    if not isinstance(spec.model, (str, Path)):
        return spec.model, False
    from embedtrain.models.resolve import load_model

    path = Path(spec.model)
    if not path.is_dir():
        raise DataError(f"teacher '{spec.name}': model folder {path} does not exist", field="teachers")
    return load_model(path, device=device, trust_remote_code=spec.trust_remote_code), True


def encode_with_teachers(texts: Sequence[str], kinds: Sequence[Kind], teachers: Sequence[TeacherSpec], *,
                         device: str | None = None) -> tuple[np.ndarray, list[int]]:
    """Combined teacher vectors ``(len(texts), sum dims)`` (float32) and each teacher's dim.

    Teachers are loaded one at a time (a folder teacher is freed before the next is loaded).
    """
    total_weight = sum(t.weight for t in teachers)
    blocks, dims = [], []
    kinds_arr = np.asarray(kinds) if len(kinds) else np.zeros(0, dtype=object)
    for spec in teachers:
        model, loaded_here = _load_teacher(spec, device)
        if spec.max_seq_length is not None:
            model.max_seq_length = spec.max_seq_length
        dim = int(model.get_embedding_dimension())
        block = np.zeros((len(texts), dim), dtype=np.float32)
        for kind in KINDS:
            idx = np.flatnonzero(kinds_arr == kind)
            if len(idx) == 0:
                continue
            vectors = model.encode([texts[i] for i in idx], prompt=spec.prompt(kind), batch_size=spec.batch_size,
                                   convert_to_numpy=True, show_progress_bar=False)
            block[idx] = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block /= np.maximum(norms, 1e-12)
        block *= np.float32(np.sqrt(spec.weight / total_weight))
        blocks.append(block)
        dims.append(dim)
        if loaded_here:
            del model
            gc.collect()
            _empty_device_cache()
    return np.concatenate(blocks, axis=1), dims


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- the store

class TeacherEmbeddings:
    """A pre-computed teacher embedding store opened read-only (rows memory-mapped, not loaded).

    ``lookup(rows)`` is what :class:`~embedtrain.losses.embedding_distill.EmbeddingDistillLoss` calls
    with the integer rows a dataset carries as its label; :meth:`rows` maps texts to those rows.
    Pickling (e.g. into dataloader workers) keeps the path only and re-opens the memmap.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.is_file():
            raise DataError(f"no teacher embedding store here ({INDEX_FILE} is missing)", file=self.directory)
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        self._keys: dict[str, int] = self.index["keys"]
        self._vectors: np.ndarray | None = None

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = np.load(self.directory / self.index["embeddings"], mmap_mode="r")
        return self._vectors

    @property
    def fingerprint(self) -> str:
        return self.index["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.index["dim"])

    @property
    def teachers(self) -> list[dict[str, Any]]:
        return self.index["teachers"]

    def __len__(self) -> int:
        return int(self.index["rows"])

    def __contains__(self, item: tuple[str, Kind] | str) -> bool:
        text, kind = (item, "document") if isinstance(item, str) else item
        return text_key(text, kind) in self._keys

    def teacher_slice(self, name: str) -> slice:
        """The columns of teacher ``name`` in the combined vectors."""
        for t in self.teachers:
            if t["name"] == name:
                return slice(t["offset"], t["offset"] + t["dim"])
        raise KeyError(name)

    def rows(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        """Store rows of ``texts`` (int64); a text that was never encoded raises ``KeyError``."""
        out = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            key = text_key(text, kind)
            if key not in self._keys:
                raise KeyError(f"text not in the teacher store ({kind}): {text[:80]!r}")
            out[i] = self._keys[key]
        return out

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of integer ``rows`` (any shape) as float32, shape ``rows.shape + (dim,)``."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"teacher store rows must be in 0..{len(self) - 1}")
        order = np.argsort(flat, kind="stable")  # sorted reads are kinder to a memmap
        out = np.empty((flat.size, self.dim), dtype=np.float32)
        out[order] = self.vectors[flat[order]]
        return out.reshape(rows.shape + (self.dim,))

    def embeddings(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        return self.lookup(self.rows(texts, kind))

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "index": self.index, "_keys": self._keys, "_vectors": None}


def store_fingerprint(teachers: Sequence[TeacherSpec], dtype: str, model_fingerprints: Sequence[str] | None = None,
                      ) -> str:
    """Fingerprint of what a store holds: every teacher's weights and settings, and the dtype."""
    if model_fingerprints is None:
        model_fingerprints = [model_fingerprint(t.model) for t in teachers]
    payload = {"version": STORE_VERSION, "dtype": dtype,
               "teachers": [{**t.settings(), "model": fp} for t, fp in zip(teachers, model_fingerprints)]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _normalise_items(texts: Iterable[str | tuple[str, Kind]]) -> list[tuple[str, str, Kind]]:
    """Distinct ``(key, text, kind)`` in first-seen order; plain strings are documents."""
    seen: dict[str, tuple[str, str, Kind]] = {}
    for i, item in enumerate(texts):
        text, kind = (item, "document") if isinstance(item, str) else item
        if not isinstance(text, str) or not text:
            raise DataError(f"text {i} is not a non-empty string: {text!r}", field="texts")
        key = text_key(text, kind)
        seen.setdefault(key, (key, text, kind))
    return list(seen.values())


def precompute_teacher_embeddings(texts: Iterable[str | tuple[str, Kind]], teachers: Sequence[TeacherSpec],
                                  directory: str | Path, *, dtype: Literal["float32", "float16"] = "float32",
                                  device: str | None = None, model_fingerprints: Sequence[str] | None = None,
                                  ) -> TeacherEmbeddings:
    """Encode every distinct text with ``teachers`` unless ``directory`` already holds it; return the store.

    ``texts`` are strings (documents) or ``(text, kind)`` pairs. Call it from every rank of a
    distributed run (all with the same texts): the missing texts are split across ranks. See the module
    docstring for the layout and the reuse rules. ``model_fingerprints`` (one per teacher, from
    :func:`model_fingerprint`) saves hashing the teachers again when the caller already did.
    """
    if dtype not in ("float32", "float16"):
        raise DataError(f"dtype must be float32 or float16, got '{dtype}'", field="dtype")
    _check_teachers(teachers)
    directory = Path(directory)
    rank, world, dist = _dist()
    items = _normalise_items(texts)
    model_fps = list(model_fingerprints) if model_fingerprints is not None else \
        [model_fingerprint(t.model) for t in teachers]
    fingerprint = store_fingerprint(teachers, dtype, model_fps)

    index_path = directory / INDEX_FILE
    old: dict[str, Any] | None = None
    if index_path.is_file():
        old = json.loads(index_path.read_text(encoding="utf-8"))
        if old.get("fingerprint") != fingerprint:
            if rank == 0:
                logger.info("teacher store %s was made by other teachers/settings: re-encoding everything", directory)
            old = None
    known = old["keys"] if old else {}
    missing = [it for it in items if it[0] not in known]
    if not missing:
        logger.info("teacher store %s already holds all %d texts", directory, len(items))
        return TeacherEmbeddings(directory)

    directory.mkdir(parents=True, exist_ok=True)
    shard_dir = directory / f"shards-{fingerprint[:12]}"
    if rank == 0:
        logger.info("encoding %d new texts with %d teacher(s) on %d process(es)", len(missing), len(teachers), world)
    shard_dir.mkdir(exist_ok=True)
    mine = missing[_my_slice(len(missing), rank, world)]
    vectors, dims = encode_with_teachers([t for _, t, _ in mine], [k for _, _, k in mine], teachers, device=device)
    np.save(shard_dir / f"shard-{rank:05d}.npy", vectors.astype(dtype))
    _barrier(dist)
    if rank == 0:
        _assemble(directory, shard_dir, world, old, missing, teachers, model_fps, dims, dtype, fingerprint)
    _barrier(dist)
    return TeacherEmbeddings(directory)


def _assemble(directory: Path, shard_dir: Path, world: int, old: dict[str, Any] | None,
              missing: list[tuple[str, str, Kind]], teachers: Sequence[TeacherSpec], model_fps: list[str],
              dims: list[int], dtype: str, fingerprint: str) -> None:
    """Rank 0: old rows + the shards in rank order -> a new memmap file, then the index (atomically)."""
    base = int(old["rows"]) if old else 0
    total = base + len(missing)
    dim = sum(dims)
    name = f"embeddings-{fingerprint[:12]}-{total}.npy"
    tmp = directory / (name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(total, dim))
    if old:
        previous = np.load(directory / old["embeddings"], mmap_mode="r")
        for start in range(0, base, 65536):
            stop = min(start + 65536, base)
            out[start:stop] = previous[start:stop]
        del previous
    row = base
    for r in range(world):
        shard = np.load(shard_dir / f"shard-{r:05d}.npy", mmap_mode="r")
        out[row:row + len(shard)] = shard
        row += len(shard)
    if row != total:
        raise RuntimeError(f"teacher shards hold {row - base} rows, expected {len(missing)}")
    out.flush()
    del out
    os.replace(tmp, directory / name)

    keys = dict(old["keys"]) if old else {}
    for i, (key, _, _) in enumerate(missing):
        keys[key] = base + i
    offsets = np.cumsum([0] + dims[:-1]).tolist()
    index = {
        "version": STORE_VERSION, "fingerprint": fingerprint, "dtype": dtype, "rows": total, "dim": dim,
        "embeddings": name,
        "teachers": [{**t.settings(), "model_fingerprint": fp, "dim": d, "offset": o,
                      "model": str(t.model) if isinstance(t.model, (str, Path)) else type(t.model).__name__}
                     for t, fp, d, o in zip(teachers, model_fps, dims, offsets)],
        "keys": keys,
    }
    tmp_index = directory / (INDEX_FILE + ".tmp")
    tmp_index.write_text(json.dumps(index), encoding="utf-8")
    os.replace(tmp_index, directory / INDEX_FILE)  # the store switches to the new file here
    if old and old["embeddings"] != name:
        (directory / old["embeddings"]).unlink(missing_ok=True)
    shutil.rmtree(shard_dir, ignore_errors=True)
    logger.info("teacher store %s: %d rows x %d dims (%s)", directory, total, dim, dtype)


# ---------------------------------------------------------------------------------------------- pair scores

class CrossEncoderScorer:
    """Teacher scores from a sentence-transformers ``CrossEncoder`` (a local folder or a loaded one).

    Scores are ``CrossEncoder.predict``'s, i.e. the same units as ``embedtrain mine --cross-encoder``.
    """

    def __init__(self, model: Any, *, batch_size: int = 32, device: str | None = None,
                 trust_remote_code: bool = False, memo: DigestMemo | None = None) -> None:
        self.fingerprint = "cross-encoder:" + model_fingerprint(model, memo)
        if isinstance(model, (str, Path)):
            from embedtrain.mining.rescore import load_cross_encoder

            model = load_cross_encoder(model, device=device, trust_remote_code=trust_remote_code)
        self.model = model
        self.batch_size = batch_size

    def __call__(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        if not len(queries):
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(list(zip(queries, documents)), batch_size=self.batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(queries), -1)[:, 0]


class BiEncoderScorer:
    """Teacher scores ``sim(E(prompt_q + q), E(prompt_d + d))`` from a SentenceTransformer (folder or loaded)."""

    def __init__(self, model: Any, *, query_prompt: str | None = None, document_prompt: str | None = None,
                 similarity: Literal["cosine", "dot"] = "cosine", batch_size: int = 32,
                 device: str | None = None, trust_remote_code: bool = False, memo: DigestMemo | None = None) -> None:
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got '{similarity}'")
        fingerprint = model_fingerprint(model, memo)
        if isinstance(model, (str, Path)):
            from embedtrain.models.resolve import load_model

            model = load_model(model, device=device, trust_remote_code=trust_remote_code)
        settings = json.dumps([query_prompt, document_prompt, similarity])
        self.fingerprint = "bi-encoder:" + hashlib.sha256((fingerprint + settings).encode()).hexdigest()
        self.model = model
        self.query_prompt, self.document_prompt = query_prompt, document_prompt
        self.similarity = similarity
        self.batch_size = batch_size

    def __call__(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        if not len(queries):
            return np.zeros(0, dtype=np.float32)
        normalize = self.similarity == "cosine"
        uq, qi = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
        ud, di = np.unique(np.asarray(documents, dtype=object), return_inverse=True)
        q = self.model.encode(list(uq), prompt=self.query_prompt, batch_size=self.batch_size,
                              convert_to_numpy=True, normalize_embeddings=normalize, show_progress_bar=False)
        d = self.model.encode(list(ud), prompt=self.document_prompt, batch_size=self.batch_size,
                              convert_to_numpy=True, normalize_embeddings=normalize, show_progress_bar=False)
        return np.einsum("ij,ij->i", q[qi], d[di]).astype(np.float32)


class PairScoreCache:
    """Scores of (query, document) pairs for one scorer, in ``pair_scores-<fingerprint>.sqlite``.

    Another scorer (or the same one with other weights) has another fingerprint and so another file.
    Only rank 0 writes (see :func:`score_pairs`).
    """

    def __init__(self, directory: str | Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self.path = self.directory / f"pair_scores-{digest}.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path)
        con.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (self.fingerprint,))
        return con

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        if not self.path.exists() or not keys:
            return {}
        con = self._connect()
        try:
            found: dict[str, float] = {}
            keys = list(keys)
            for start in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                chunk = keys[start:start + 900]
                marks = ",".join("?" * len(chunk))
                found.update(con.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk).fetchall())
            return found
        finally:
            con.close()

    def put_many(self, items: dict[str, float]) -> None:
        if not items:
            return
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", list(items.items()))
        finally:
            con.close()

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        con = self._connect()
        try:
            return int(con.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
        finally:
            con.close()


def score_pairs(queries: Sequence[str], documents: Sequence[str], scorer, cache: PairScoreCache | None = None,
                ) -> np.ndarray:
    """Teacher score of each ``(queries[i], documents[i])`` (float32), scoring each distinct pair once.

    Pairs already in ``cache`` are not scored again; new scores are added to it. Under
    ``torch.distributed`` the pairs to score are split across ranks and the scores gathered, so every
    rank returns the same array (call it from every rank with the same pairs).
    """
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
    rank, world, dist = _dist()
    keys = [pair_key(q, d) for q, d in zip(queries, documents)]
    known = cache.get_many(sorted(set(keys))) if cache is not None else {}
    todo: dict[str, tuple[str, str]] = {}
    for key, q, d in zip(keys, queries, documents):
        if key not in known and key not in todo:
            todo[key] = (q, d)
    todo_keys = list(todo)
    mine = todo_keys[_my_slice(len(todo_keys), rank, world)]
    scores = scorer([todo[k][0] for k in mine], [todo[k][1] for k in mine])
    new = {k: float(s) for k, s in zip(mine, np.asarray(scores).reshape(-1))}
    if dist is not None:
        parts: list[dict[str, float] | None] = [None] * world
        dist.all_gather_object(parts, new)
        new = {k: v for part in parts for k, v in (part or {}).items()}
    if cache is not None and rank == 0:
        cache.put_many(new)
    _barrier(dist)
    if todo_keys:
        logger.info("teacher scored %d new pairs (%d from the cache)", len(todo_keys), len(known))
    merged = {**known, **new}
    return np.asarray([merged[k] for k in keys], dtype=np.float32)
