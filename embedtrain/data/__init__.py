"""Data reading and validation: files -> validated ``datasets.Dataset`` in a loss-ready layout."""

from embedtrain.data.formats import FORMATS, prompt_columns, to_dataset
from embedtrain.data.readers import Records, read_records

__all__ = ["FORMATS", "Records", "prompt_columns", "read_records", "to_dataset"]
