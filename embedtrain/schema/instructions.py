"""The ``instructions:`` section of a recipe: e5-mistral-style task instructions saved as checkpoint prompts.

Decoder embedders are usually trained and evaluated with a task instruction in front of the *query* and
nothing in front of the *passage* (Wang et al., 2023, "Improving Text Embeddings with Large Language
Models")::

    Instruct: Given a web search query, retrieve relevant passages that answer the query
    Query: how do plants make food

Symmetric tasks (STS, classification, clustering...) put the instruction on every text. A recipe gives::

    instructions:
      template: "Instruct: {instruction}\\nQuery: "     # the default
      task_types: {Retrieval: "Given a question, retrieve passages that answer it"}
      tasks: {SciFact: "Given a scientific claim, retrieve documents that support or refute it"}
    datasets:
      - {name: qa, path: qa.jsonl, format: pairs, instruction: "Given a question, retrieve passages that answer it"}
      - {name: sts, path: stsb.jsonl, format: scored_pairs, instruction: "Retrieve semantically similar text",
         symmetric: true}

How they become prompts is :mod:`embedtrain.models.instructions`; this module holds only the types.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from embedtrain.schema.base import StrictModel

#: e5-mistral's query template.
E5_TEMPLATE = "Instruct: {instruction}\nQuery: "


def check_template(template: str) -> str:
    """``template`` if it holds ``{instruction}`` and no other placeholder; else ValueError."""
    if "{instruction}" not in template:
        raise ValueError("template must contain '{instruction}'")
    try:
        template.format(instruction="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"template has a placeholder other than '{{instruction}}': {exc}") from None
    return template


class InstructionsConfig(StrictModel):
    """Instructions saved into the checkpoint as prompts, keyed the way mteb looks them up per task.

    * ``template``: how an instruction becomes a prefix; must contain ``{instruction}``. It also formats the
      ``instruction`` of every training dataset.
    * ``task_types``: instruction per MTEB task type (``STS``, ``Retrieval``, ``Classification``...); merged
      over embedtrain's defaults (one per type, e5-mistral style) unless ``use_defaults: false``.
    * ``tasks``: instruction per MTEB task name (wins over its type). The task's type (from mteb's metadata)
      decides whether documents get the instruction too; an unknown name is treated as symmetric.
    """

    template: str = E5_TEMPLATE
    use_defaults: bool = True
    task_types: dict[str, str] = Field(default_factory=dict)
    tasks: dict[str, str] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _has_placeholder(cls, template: str) -> str:
        return check_template(template)

    def format(self, instruction: str) -> str:
        """The prefix for ``instruction``."""
        return self.template.format(instruction=instruction)
