"""Reading text files: UTF-8 only (a byte-order mark is accepted), with located errors for anything else."""

from __future__ import annotations

from pathlib import Path

from embedtrain.errors import DataError, LocatedError


def read_text_utf8(path: str | Path, *, error: type[LocatedError] = DataError) -> str:
    """The text of ``path`` decoded as UTF-8 (a BOM is dropped); undecodable bytes are one located error."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"not UTF-8 text: byte {exc.start} (0x{data[exc.start]:02x}) cannot be decoded; save the "
                    "file as UTF-8", file=path, line=line) from None
    return text
