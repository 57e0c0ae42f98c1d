"""embedtrain: recipe-driven training of text embedding models on top of sentence-transformers."""

__version__ = "0.1.0"
