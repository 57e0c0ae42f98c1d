"""Mine hard negatives for (anchor, positive) pairs: the same command as ``embedtrain mine``, same flags.

Usage: python data_prep/mine_hard_negatives.py --model all-MiniLM-L6-v2 --input pairs.jsonl \
    --output mined.jsonl [--corpus corpus.jsonl] [--range-min 10 --range-max 100 --num-negatives 5 \
    --relative-margin 0.05 --candidates 50 --use-faiss --cross-encoder PATH]

``python data_prep/mine_hard_negatives.py --help`` lists every option (one per field of
:class:`embedtrain.schema.mining.OfflineMiningConfig`).
"""

from __future__ import annotations

import sys

from embedtrain.cli import run_app


def main(argv: list[str] | None = None) -> None:
    run_app(["mine", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
