"""Sub-network embeddings from one pass equal truncated copies; default pair lists and their checks."""

from __future__ import annotations

import pytest
import torch

from embedtrain.models.resolve import load_model
from embedtrain.models.subnetworks import (
    SubnetworkEmbedder,
    default_dims,
    default_layers,
    default_pairs,
    validate_pairs,
)
from embedtrain.models.truncate import first_layers, num_layers, truncated_copy

SENTENCES = ["a cat sits on the mat", "the stock market fell sharply today", "hello"]


@pytest.fixture(scope="module")
def normalized_model(tiny_model_factory):
    model = load_model(tiny_model_factory(num_layers=4, hidden_size=32, normalize=True, pooling="cls"))
    model.eval()
    return model


@pytest.mark.parametrize("exact", [True, False])
def test_embeddings_equal_truncated_copies(normalized_model, exact):
    embedder = SubnetworkEmbedder(normalized_model)
    embedder.hidden_states_exact = exact  # False forces the run-the-first-L-layers fallback
    pairs = [(1, 4), (2, 16), (3, 32), (4, 8), (4, 32)]
    with torch.no_grad():
        got = embedder.embed(normalized_model.preprocess(SENTENCES), pairs)
    for (layers, dim), emb in zip(pairs, got):
        expected = truncated_copy(normalized_model, layers=layers, dim=dim).encode(SENTENCES, convert_to_tensor=True)
        assert emb.shape == (3, dim)
        torch.testing.assert_close(emb, expected, rtol=1e-5, atol=1e-6)
    assert num_layers(normalized_model) == 4  # the fallback restored every layer


def test_first_layers_context_restores_the_model(normalized_model):
    before = normalized_model.encode(SENTENCES, convert_to_tensor=True)
    with first_layers(normalized_model, 2):
        assert num_layers(normalized_model) == 2
    assert num_layers(normalized_model) == 4
    torch.testing.assert_close(normalized_model.encode(SENTENCES, convert_to_tensor=True), before)


def test_default_pairs_scale_the_starbucks_list():
    assert default_pairs(12, 768) == [(2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)]
    assert default_pairs(6, 384) == [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
    assert default_pairs(24, 1024) == [(4, 43), (8, 85), (12, 171), (16, 341), (20, 683), (24, 1024)]
    small = default_pairs(2, 8)
    assert small[-1] == (2, 8) and len(set(small)) == len(small)
    assert validate_pairs(small, 2, 8) == small  # the scaled list always passes its own checks
    assert default_layers(6) == [1, 2, 3, 4, 5, 6] and default_dims(384) == [16, 32, 64, 128, 256, 384]


@pytest.mark.parametrize(("pairs", "message"), [
    ([], "empty"),
    ([[0, 8]], "layer 0 is outside"),
    ([[2, 33]], "dim 33 is outside"),
    ([[2, 8], [1, 16]], "small to large"),
    ([[2, 8], [2, 8]], "twice"),
    ([[2, 8.5]], "two integers"),
    ([[True, 8]], "two integers"),
])
def test_validate_pairs_errors(pairs, message):
    with pytest.raises(ValueError, match=message):
        validate_pairs(pairs, 4, 32)
