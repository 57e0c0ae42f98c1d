"""Token masking for SMAE pre-training: whole-word masks for the encoder and, nested in them, the MAE decoder.

Starbucks' SMAE (after RetroMAE) masks each text twice from one shuffled list of whole words: the encoder
input with ``encoder_probability`` of the tokens (0.2) and the decoder input with ``decoder_probability``
(0.4); a word masked for the encoder is masked for the decoder too. Budgets count every token of the text,
special tokens included (which are never masked); a word that would overshoot a budget is skipped. The chosen
positions are then corrupted BERT-style: 80% ``[MASK]``, 10% a random token, 10% unchanged, and only they
carry labels (every other label is -100).

Words are the tokenizer's own (``word_ids`` of a fast tokenizer, stored with each row when the data is
tokenised), so the masking works for WordPiece, BPE and SentencePiece vocabularies alike. With
``whole_word=False`` every token is its own word.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

IGNORE = -100


def word_groups(word_ids: list[int], special: list[bool], whole_word: bool) -> list[list[int]]:
    """Token positions grouped by word (special tokens left out); ``word_ids`` uses -1 for no word."""
    groups: list[list[int]] = []
    last = None
    for pos, (word, is_special) in enumerate(zip(word_ids, special)):
        if is_special:
            last = None
            continue
        if whole_word and groups and word >= 0 and word == last:
            groups[-1].append(pos)
        else:
            groups.append([pos])
        last = word
    return groups


def choose_masks(groups: list[list[int]], length: int, encoder_probability: float,
                 decoder_probability: float | None, rng: random.Random) -> tuple[set[int], set[int]]:
    """Positions masked for the encoder and for the decoder (the encoder's are a subset of the decoder's)."""
    enc_budget = min(length, max(1, round(length * encoder_probability)))
    dec_budget = min(length, max(1, round(length * decoder_probability))) if decoder_probability else 0
    budget = max(enc_budget, dec_budget)
    order = list(groups)
    rng.shuffle(order)
    encoder: set[int] = set()
    decoder: set[int] = set()
    covered = 0
    for group in order:
        if covered >= budget:
            break
        if covered + len(group) > budget:
            continue
        enc_ok = len(encoder) + len(group) <= enc_budget
        dec_ok = len(decoder) + len(group) <= dec_budget
        if enc_ok and (dec_ok or not decoder_probability):
            encoder.update(group)
        if dec_ok:
            decoder.update(group)
        covered += len(group)
    return encoder, decoder


@dataclass
class SmaeCollator:
    """Pads a batch and builds the encoder MLM input/labels and (with ``decoder_probability``) the decoder's.

    Rows hold ``input_ids``, ``special_tokens_mask`` and ``word_ids`` (-1 outside words).
    """

    tokenizer: Any
    encoder_probability: float = 0.2
    decoder_probability: float | None = 0.4
    whole_word: bool = True
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _corrupt(self, ids: torch.Tensor, positions: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = ids.clone(), torch.full_like(ids, IGNORE)
        vocab = len(self.tokenizer)
        for pos in sorted(positions):
            labels[pos] = ids[pos]
            draw = self._rng.random()
            if draw < 0.8:
                inputs[pos] = self.tokenizer.mask_token_id
            elif draw < 0.9:
                inputs[pos] = self._rng.randrange(vocab)
        return inputs, labels

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        pad = self.tokenizer.pad_token_id
        out: dict[str, list[torch.Tensor]] = {"input_ids": [], "labels": [], "attention_mask": []}
        if self.decoder_probability:
            out.update(decoder_input_ids=[], decoder_labels=[])
        for row in rows:
            ids = list(row["input_ids"])
            n = len(ids)
            groups = word_groups(list(row["word_ids"]), [bool(s) for s in row["special_tokens_mask"]], self.whole_word)
            enc, dec = choose_masks(groups, n, self.encoder_probability, self.decoder_probability, self._rng)
            padded = torch.tensor(ids + [pad] * (width - n))
            inputs, labels = self._corrupt(padded, enc)
            out["input_ids"].append(inputs)
            out["labels"].append(labels)
            out["attention_mask"].append(torch.tensor([1] * n + [0] * (width - n)))
            if self.decoder_probability:
                d_inputs, d_labels = self._corrupt(padded, dec)
                out["decoder_input_ids"].append(d_inputs)
                out["decoder_labels"].append(d_labels)
        return {k: torch.stack(v) for k, v in out.items()}


def tokenize_for_smae(tokenizer, texts: list[str], max_length: int) -> dict[str, list]:
    """``input_ids``, ``special_tokens_mask`` and ``word_ids`` (-1 outside words) of ``texts``."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    if getattr(enc, "is_fast", False) or hasattr(enc, "word_ids"):
        try:
            words = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(texts))]
        except ValueError:  # a slow tokenizer: every token is its own word
            words = [list(range(len(ids))) for ids in enc["input_ids"]]
    else:
        words = [list(range(len(ids))) for ids in enc["input_ids"]]
    return {"input_ids": enc["input_ids"], "special_tokens_mask": enc["special_tokens_mask"], "word_ids": words}
