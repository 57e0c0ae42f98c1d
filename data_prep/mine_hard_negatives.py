"""Mine hard negatives for (anchor, positive) pairs; same job as ``embedtrain mine``.

Usage: python data_prep/mine_hard_negatives.py --model all-MiniLM-L6-v2 --input pairs.jsonl \
    --output mined.jsonl [--corpus corpus.jsonl] [--range-min 10 --range-max 100 --num-negatives 5 \
    --relative-margin 0.05 --candidates 50 --faiss --cross-encoder PATH]

Every option of :class:`embedtrain.mining.config.OfflineMiningConfig` is accepted as --flag-name.
"""

from __future__ import annotations

import argparse
import logging
import types
import typing

from embedtrain.mining.config import OfflineMiningConfig, parse_column_map
from embedtrain.mining.offline import run_mining

logger = logging.getLogger("mine_hard_negatives")


def _arg_type(annotation):
    """The scalar type behind ``X | None`` annotations (argparse needs a callable)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _arg_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, info in OfflineMiningConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _arg_type(info.annotation)
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif name == "columns":
            parser.add_argument(flag, dest=name, nargs="*", default=None, metavar="ROLE=COLUMN")
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, required=info.is_required())
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    if "columns" in args:
        args["columns"] = parse_column_map(args["columns"])
    result = run_mining(OfflineMiningConfig(**args))
    logger.info("%s", result.stats.summary())


if __name__ == "__main__":
    main()
