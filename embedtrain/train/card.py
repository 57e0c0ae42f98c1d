"""Model-card examples taken from the head of the training data, not from random rows of all of it.

sentence-transformers fills the model card's widget examples when the trainer is created
(``set_widget_examples``): it reads 1,000 random rows of the training set. On a memory-mapped Arrow dataset of
millions of rows every one of those rows is in another part of the file, and each read maps the pages around
it: the whole file can end up resident before the first step (~480 MB of a 530 MB file at 1M pairs, measured;
issue 13). :func:`preset_widget_examples` runs the same selection on the first :data:`WIDGET_WINDOW` rows of
each dataset instead, so the trainer finds the widget filled and skips its own pass.
"""

from __future__ import annotations

from typing import Any

#: Rows at the head of each dataset that the widget examples are drawn from.
WIDGET_WINDOW = 20_000


def preset_widget_examples(model: Any, train_dataset: Any) -> None:
    """Fill ``model.model_card_data.widget`` from the first :data:`WIDGET_WINDOW` rows of ``train_dataset``
    (a ``Dataset`` or a dict of them; streamed datasets are left to sentence-transformers, which skips them)."""
    from datasets import Dataset, DatasetDict

    card = getattr(model, "model_card_data", None)
    if card is None or card.widget:
        return
    datasets = train_dataset if isinstance(train_dataset, dict) else {"dataset": train_dataset}
    head = {name: ds.select(range(min(len(ds), WIDGET_WINDOW)))
            for name, ds in datasets.items() if isinstance(ds, Dataset) and len(ds)}
    if head and len(head) == len(datasets):
        card.set_widget_examples(DatasetDict(head))
