"""The mutable negatives table a training dataset reads its hard negatives through.

``datasets.Dataset`` objects are immutable Arrow tables and the trainer builds its dataloader
once, so the negatives of a row cannot be rewritten in place. Instead :meth:`NegativeTable.wrap`
adds a row-index column and a ``with_transform`` that, whenever rows are read (by the batch
sampler or the dataloader), replaces ``negative_1 ... negative_n`` with the row's *current*
negatives from this table. sentence-transformers chains its own ``dataset_name`` transform on top,
so prompts and per-dataset losses keep working.

Which rows were *trained on* is recorded by the data collator (:meth:`NegativeTable.collate`), not by
the reads: the duplicate-free batch sampler reads every row it considers, and a resumed run reads the
batches it skips, neither of which is training. The row index travels to the collator as a tagged
string (:data:`ROW_TAG`), which the collator removes before tokenising.

Per row the table keeps a ranked list of candidate negatives (the row's negatives from the file,
then its extra candidates), the ids of the current negatives, a cursor to the next unused
candidate, and the ``initial`` / ``current`` mean query-negative scores used by
:mod:`embedtrain.mining.dynamic`. Texts are interned in one pool so the state is small integer
arrays; :meth:`save` / :meth:`load` round-trip it through an ``.npz`` file with a fingerprint of
the data so a checkpoint cannot be resumed against different data.

Reads happen in the training process, so dynamic mining needs ``dataloader_num_workers: 0``
(worker processes would hold stale copies of the table).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedtrain.errors import CheckpointError

ROW_COLUMN = "__embedtrain_row"
#: Prefix of the row tags in :data:`ROW_COLUMN` (a NUL byte: never part of real text, so the batch sampler's
#: duplicate check cannot mistake a tag for a text).
ROW_TAG = "\x00embedtrain-row:"


class RowRecordingCollator:
    """Wraps a data collator: notes each batch's table rows, drops the tags, then collates.

    Dataloaders fetch ahead (accelerate collates the next batch before the current one trains), so a batch's
    rows are only *pending* when collated; :meth:`commit` moves the oldest batches to their tables' ``seen``
    once they have trained (the dynamic-mining callback commits ``gradient_accumulation_steps`` batches per
    optimizer step). For a table whose loss reports its own similarities (``reports_to_loss``), the batch's row
    indices also travel to the loss as its ``label`` tensor (sentence-transformers passes it as ``labels``;
    :class:`embedtrain.mining.reuse.LossTap` takes it out again). Every other attribute is the wrapped
    collator's (trainers read settings from it).
    """

    def __init__(self, collate_fn, tables: Sequence[NegativeTable]) -> None:
        self.collate_fn = collate_fn
        self.tables = {table.name: table for table in tables}
        self.pending: deque[dict[str, list[int]]] = deque()

    def __call__(self, features):
        rows: dict[str, list[int]] = {}
        for feature in features:
            tag = feature.pop(ROW_COLUMN, None) if isinstance(feature, dict) else None
            if tag is not None:
                name, _, row = tag[len(ROW_TAG):].rpartition(":")
                rows.setdefault(name, []).append(int(row))
        self.pending.append(rows)
        batch = self.collate_fn(features)
        if len(rows) == 1 and isinstance(batch, MutableMapping) and ROW_LABEL not in batch:
            (name, batch_rows), = rows.items()
            if self.tables[name].reports_to_loss:
                batch[ROW_LABEL] = torch.tensor(batch_rows)  # the loss's tap takes it (embedtrain.mining.reuse)
        return batch

    def commit(self, batches: int = 1) -> None:
        """The oldest ``batches`` collated batches have trained: record their rows."""
        for _ in range(min(batches, len(self.pending))):
            for name, rows in self.pending.popleft().items():
                self.tables[name].record(rows)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["collate_fn"], name)


def collate_recording_rows(collate_fn, tables: Sequence[NegativeTable]) -> RowRecordingCollator:
    """``collate_fn`` wrapped to record the table rows of every batch (see :class:`RowRecordingCollator`)."""
    return RowRecordingCollator(collate_fn, tables)


#: The batch key the row indices travel to the loss in (sentence-transformers passes ``label`` as ``labels``).
ROW_LABEL = "label"


class NegativeTable:
    """Current negatives, candidate lists and scores of one dataset's rows."""

    def __init__(self, name: str, anchors: Sequence[str], positives: Sequence[str],
                 ranked: Sequence[Sequence[str]], num_negatives: int, extra_texts: Sequence[str] = ()) -> None:
        if not (len(anchors) == len(positives) == len(ranked)):
            raise ValueError("anchors, positives and ranked lists must have one entry per row")
        self.name = name
        self.num_negatives = n = num_negatives
        self.anchors = list(anchors)
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}
        self.positive_ids = np.array([self.intern(p) for p in positives], dtype=np.int64)
        self.ranked = [np.array([self.intern(t) for t in row], dtype=np.int64) for row in ranked]
        short = [i for i, r in enumerate(self.ranked) if len(r) < n]
        if short:
            raise ValueError(f"row {short[0]} has {len(self.ranked[short[0]])} negatives, {n} are needed")
        for t in extra_texts:
            self.intern(t)
        size = len(self.anchors)
        self.current_ids = np.stack([r[:n] for r in self.ranked]) if size else np.zeros((0, n), dtype=np.int64)
        self.cursor = np.full(size, n, dtype=np.int64)
        self.initial = np.full(size, np.nan)
        self.current = np.full(size, np.nan)
        self.refresh_count = np.zeros(size, dtype=np.int64)
        #: Per row, the ids of negatives found easy: never picked again for that row.
        self.retired: list[set[int]] = [set() for _ in range(size)]
        self.history: list[dict[str, Any]] = []
        self.seen: set[int] = set()
        self.restored_seen: set[int] = set()
        #: Mean anchor-negative cosines the loss computed for rows it trained on since the last round
        #: (this process only; :mod:`embedtrain.mining.reuse`), row -> score.
        self.captured: dict[int, float] = {}
        #: Whether the collator sends this table's row indices to the loss (set when its loss is tapped).
        self.reports_to_loss = False
        self._fingerprint: str | None = None

    # -- texts -------------------------------------------------------------------------------
    def intern(self, text: str) -> int:
        """Pool id of ``text`` (added if new)."""
        found = self._ids.get(text)
        if found is None:
            found = self._ids[text] = len(self.texts)
            self.texts.append(text)
            self._fingerprint = None
        return found

    def id_of(self, text: str) -> int | None:
        return self._ids.get(text)

    def __len__(self) -> int:
        return len(self.anchors)

    def negatives(self, row: int) -> list[str]:
        """The current negative texts of ``row``."""
        return [self.texts[j] for j in self.current_ids[row]]

    def positive(self, row: int) -> str:
        return self.texts[self.positive_ids[row]]

    # -- dataset view ------------------------------------------------------------------------
    def wrap(self, dataset):
        """``dataset`` (columns anchor, positive, negative_1..n) reading negatives from this table."""
        if len(dataset) != len(self):
            raise ValueError(f"dataset has {len(dataset)} rows, the table {len(self)}")
        return dataset.add_column(ROW_COLUMN, list(range(len(self)))).with_transform(self.transform)

    def transform(self, batch: dict[str, list]) -> dict[str, list]:
        """``with_transform`` hook: current negatives for the rows in ``batch``; the row index becomes a tag."""
        batch = dict(batch)
        rows = [int(r) for r in batch[ROW_COLUMN]]
        batch[ROW_COLUMN] = [f"{ROW_TAG}{self.name}:{r}" for r in rows]
        for k in range(self.num_negatives):
            batch[f"negative_{k + 1}"] = [self.texts[self.current_ids[r, k]] for r in rows]
        return batch

    def record(self, rows: Sequence[int]) -> None:
        """Note ``rows`` as trained on (what the collator does for every training batch)."""
        self.seen.update(int(r) for r in rows)

    def capture(self, rows: Sequence[int], scores: Sequence[float]) -> None:
        """Record the loss's own anchor-negative scores of ``rows`` (the latest one of a row wins)."""
        for r, value in zip(rows, scores):
            self.captured[int(r)] = float(value)

    def take_captured(self) -> dict[int, float]:
        """Scores captured since the last call; clears the record."""
        captured, self.captured = self.captured, {}
        return captured

    def take_seen(self) -> list[int]:
        """Rows trained on since the last call, sorted; clears the record."""
        rows = sorted(self.seen)
        self.seen.clear()
        return rows

    # -- updates -----------------------------------------------------------------------------
    def advance(self, row: int) -> bool:
        """Move ``row`` to the next ``num_negatives`` ranked candidates; False if too few are left."""
        start, n = int(self.cursor[row]), self.num_negatives
        if start + n > len(self.ranked[row]):
            return False
        self.current_ids[row] = self.ranked[row][start:start + n]
        self.cursor[row] = start + n
        self.refresh_count[row] += 1
        return True

    def retire(self, row: int) -> None:
        """Remember ``row``'s current negatives as easy: they are never picked for it again."""
        self.retired[row].update(int(j) for j in self.current_ids[row])

    def replace(self, row: int, ids: Sequence[int]) -> None:
        """Set ``row``'s negatives to pool ``ids`` (fresh retrieval); the current ones are retired."""
        if len(ids) != self.num_negatives:
            raise ValueError(f"expected {self.num_negatives} negative ids, got {len(ids)}")
        self.retire(row)
        self.current_ids[row] = np.asarray(ids, dtype=np.int64)
        self.refresh_count[row] += 1

    # -- persistence -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of the rows, candidate lists and text pool; a saved state only loads onto equal data."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{len(self)}:{self.num_negatives}:{len(self.texts)}".encode())
            for t in self.texts:
                h.update(t.encode("utf-8", "surrogatepass"))
                h.update(b"\0")
            h.update(self.positive_ids.tobytes())
            for r in self.ranked:
                h.update(r.tobytes())
                h.update(b"|")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        retired = [(r, j) for r, ids in enumerate(self.retired) for j in sorted(ids)]
        return {"current_ids": self.current_ids.copy(), "cursor": self.cursor.copy(), "initial": self.initial.copy(),
                "current": self.current.copy(), "refresh_count": self.refresh_count.copy(),
                "seen": np.array(sorted(self.seen), dtype=np.int64),
                "retired": np.array(retired, dtype=np.int64).reshape(-1, 2),
                "history": list(self.history), "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any], source: str | Path | None = None) -> None:
        if state["fingerprint"] != self.fingerprint():
            raise CheckpointError(f"dynamic mining state was saved for different data than dataset '{self.name}' "
                                  "(rows, negatives or candidates changed); resume with the same data",
                                  file=source)
        self.current_ids = np.array(state["current_ids"], dtype=np.int64)
        self.cursor = np.array(state["cursor"], dtype=np.int64)
        self.initial = np.array(state["initial"], dtype=np.float64)
        self.current = np.array(state["current"], dtype=np.float64)
        self.refresh_count = np.array(state["refresh_count"], dtype=np.int64)
        self.retired = [set() for _ in range(len(self))]
        for r, j in np.asarray(state.get("retired", np.zeros((0, 2))), dtype=np.int64).reshape(-1, 2):
            self.retired[int(r)].add(int(j))
        self.history = list(state["history"])
        #: Rows read since the last round when the state was saved (they belong to the next round).
        self.restored_seen = {int(r) for r in state.get("seen", ())}

    def save(self, path: str | Path) -> Path:
        """Write the state to ``path`` (``.npz``), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        meta = json.dumps({"fingerprint": state.pop("fingerprint"), "history": state.pop("history"),
                           "dataset": self.name})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=np.array(meta), **state)
        tmp.replace(path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore the state written by :meth:`save` (CheckpointError on missing file or other data)."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError("no dynamic mining state in this checkpoint", file=path)
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            state = {k: data[k] for k in data.files if k != "meta"}
        state.update(fingerprint=meta["fingerprint"], history=meta["history"])
        self.load_state_dict(state, source=path)
