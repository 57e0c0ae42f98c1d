"""Ship smaller models cut out of a trained one (``embedtrain export``)."""

from embedtrain.export.small_model import ExportResult, export_small_model
from embedtrain.export.speed import EncodeSpeed, load_speed_sentences, measure_encode_speed

__all__ = ["EncodeSpeed", "ExportResult", "export_small_model", "load_speed_sentences", "measure_encode_speed"]
