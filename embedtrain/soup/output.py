"""Writing a soup to disk: the first ingredient's configuration, byte for byte, with the averaged weights.

The souped model is saved to a scratch folder first; every file that save produces is then taken
from the first ingredient when it is configuration (modules.json, pooling/normalise/dense configs,
sentence_bert_config.json, config_sentence_transformers.json with its prompts, tokenizer files,
task_adapters.json...) and from the scratch folder when it holds weights (``*.safetensors``,
``*.bin``..., shard indexes, and adapter configs, whose rank changes when LoRA adapters are
averaged). The first ingredient's model card, evaluation results and training files are *not*
copied: they describe that one checkpoint, not the soup. ``soup.json`` records how the soup was made.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from embedtrain.io.checkpoints import WEIGHT_SUFFIXES, atomic_save

SOUP_FILE = "soup.json"
#: Written by sentence-transformers' save but specific to the first ingredient: never copied from it.
_NOT_FROM_FIRST = {"README.md"}


def _is_weight_file(rel: Path) -> bool:
    name = rel.name
    if name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json"):
        return True
    return rel.parts[:1] == ("adapters",) and name == "adapter_config.json"


def write_soup(model, first: Path, out: Path, info: dict[str, Any], *, record: str = SOUP_FILE) -> Path:
    """Save ``model`` to ``out`` (atomically) with ``first``'s configuration files and ``info`` as ``record``
    (``soup.json``).

    ``out`` was checked (:func:`embedtrain.io.checkpoints.check_new_dir`) before the ingredients were read; an
    existing folder is replaced only once the new soup is complete.
    """

    def write(folder: str) -> None:
        with tempfile.TemporaryDirectory(prefix="embedtrain-soup-") as tmp:
            model.save(tmp, create_model_card=False)
            tmp_root = Path(tmp)
            for src in sorted(p for p in tmp_root.rglob("*") if p.is_file()):
                rel = src.relative_to(tmp_root)
                if rel.name in _NOT_FROM_FIRST:
                    continue
                carried = first / rel
                chosen = src if _is_weight_file(rel) or not carried.is_file() else carried
                target = Path(folder) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(chosen, target)
        (Path(folder) / record).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    return atomic_save(write, out)
