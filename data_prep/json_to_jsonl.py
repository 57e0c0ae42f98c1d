"""Convert a JSON list of records (e.g. ../shared/data/stsb_train.json) to JSON Lines.

Usage: python data_prep/json_to_jsonl.py INPUT.json OUTPUT.jsonl [--keep sentence1,sentence2,score]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from embedtrain.io.readers import read_records

logger = logging.getLogger("json_to_jsonl")


def convert(src: Path, dst: Path, keep: list[str] | None = None) -> int:
    """Write each record of ``src`` as one line of ``dst``; return the number of records."""
    records = read_records(src, "json")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8") as fh:
        for row in records.rows:
            if keep:
                row = {k: row[k] for k in keep}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(records)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--keep", type=lambda s: s.split(","), default=None)
    args = parser.parse_args()
    n = convert(args.src, args.dst, args.keep)
    logger.info("wrote %d records to %s", n, args.dst)


if __name__ == "__main__":
    main()
