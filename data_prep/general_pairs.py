"""General pairs scored by the start model: a second training dataset that keeps the model's general ranking.

Fine-tuning on one target moves the whole embedding space; rehearsing *general* pairs while training asks the
model to keep ranking them as it did before. No labels are needed: unlabeled sentences are paired (each sampled
sentence with its nearest neighbour, so that high similarities occur, plus random pairs for the rest) and every
pair is scored by the *start* model's cosine similarity. Trained with a ranking loss (CoSENT, AnglE) as its own
dataset, it is a data-side form of self-distillation (docs/generalization.md, "mixing general pairs").

Usage::

    python data_prep/general_pairs.py --model all-MiniLM-L6-v2 --output general_pairs.jsonl \
        [--sentences my_sentences.txt] [--num-pairs 3000] [--neighbour-fraction 0.5] [--seed 0]

``--sentences``: a ``.txt`` file (one sentence per line) or rows with a text column; default: the 155 general
sentences bundled with embedtrain (``embedtrain/resources/general_sentences.txt``). The output is a
``scored_pairs`` file (``sentence1``, ``sentence2``, ``score``) to add beside the target dataset::

    datasets:
      - {name: stsb, path: stsb/train.jsonl, format: scored_pairs, weight: 2}
      - {name: general, path: general_pairs.jsonl, format: scored_pairs, weight: 1}   # 1 batch in 3

Keep the general pairs a separate dataset (every batch comes from one dataset): a ranking loss compares every
pair of a batch, and gold 0-5 scores must not be ranked against cosine similarities.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import torch

logger = logging.getLogger("general_pairs")


def pair_indices(embeddings: torch.Tensor, *, num_pairs: int, neighbour_fraction: float = 0.5,
                 seed: int = 0, texts: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Index pairs over the rows of ``embeddings`` (L2-normalised): ``neighbour_fraction`` of them join a sampled
    row with its nearest other row (at most one per row), the rest are random; no pair twice, no row with itself
    (nor with an identical text when ``texts`` is given)."""
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError("need at least two sentences to build pairs")
    limit = min(num_pairs, n * (n - 1) // 2)
    same = (lambda i, j: texts[i] == texts[j]) if texts is not None else (lambda i, j: False)
    rng = random.Random(seed)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    anchors = rng.sample(range(n), min(n, int(round(limit * neighbour_fraction))))
    for start in range(0, len(anchors), 1024):
        rows = torch.tensor(anchors[start:start + 1024])
        sims = embeddings[rows] @ embeddings.T
        sims[torch.arange(len(rows)), rows] = -2.0  # not itself
        for i, j in zip(rows.tolist(), sims.argmax(dim=1).tolist()):
            key = (min(i, j), max(i, j))
            if key not in seen and not same(i, j):
                seen.add(key)
                pairs.append((i, j))
    attempts = 0
    while len(pairs) < limit and attempts < 50 * limit:
        attempts += 1
        i, j = rng.randrange(n), rng.randrange(n)
        key = (min(i, j), max(i, j))
        if i != j and key not in seen and not same(i, j):
            seen.add(key)
            pairs.append((i, j))
    return pairs


@torch.no_grad()
def general_pairs(model, sentences: Sequence[str], *, num_pairs: int, neighbour_fraction: float = 0.5,
                  seed: int = 0, batch_size: int = 64) -> list[dict]:
    """``sentence1, sentence2, score`` rows of general pairs scored by ``model``'s cosine similarity (the start
    model: call it before training)."""
    sentences = list(sentences)
    emb = model.encode(sentences, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                       show_progress_bar=False).float().cpu()
    pairs = pair_indices(emb, num_pairs=num_pairs, neighbour_fraction=neighbour_fraction, seed=seed, texts=sentences)
    return [{"sentence1": sentences[i], "sentence2": sentences[j], "score": round(float(emb[i] @ emb[j]), 6)}
            for i, j in pairs]


def main(argv: list[str] | None = None) -> Path:
    from embedtrain.io.sentences import default_general_text, read_sentences
    from embedtrain.models.resolve import load_model, resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the start model (folder or packaged name) to score with")
    parser.add_argument("--output", required=True, type=Path, help="scored_pairs JSONL file to write")
    parser.add_argument("--sentences", type=Path, default=None,
                        help="unlabeled sentences (.txt, one per line, or rows with a text column); "
                             "default: embedtrain's bundled general sentences")
    parser.add_argument("--num-pairs", type=int, default=3000)
    parser.add_argument("--neighbour-fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    if not 0 <= args.neighbour_fraction <= 1:
        parser.error("--neighbour-fraction must be in [0, 1]")
    if args.num_pairs < 1:
        parser.error("--num-pairs must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sentences = read_sentences(args.sentences or default_general_text(), minimum=2)
    model = load_model(resolve_model_path(args.model), device=args.device, trust_remote_code=args.trust_remote_code)
    rows = general_pairs(model, sentences, num_pairs=args.num_pairs, neighbour_fraction=args.neighbour_fraction,
                         seed=args.seed, batch_size=args.batch_size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    logger.info("wrote %d general pairs from %d sentences, scored by %s, to %s", len(rows), len(sentences),
                args.model, args.output)
    return args.output


if __name__ == "__main__":
    main()
