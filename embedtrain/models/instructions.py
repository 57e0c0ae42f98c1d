"""Instruction prompts (e5-mistral style) for training data and for MTEB evaluation.

A recipe's ``instructions:`` section (:class:`~embedtrain.schema.instructions.InstructionsConfig`) becomes
sentence-transformers *prompts* saved in the checkpoint (``config_sentence_transformers.json``), under the
names mteb looks up for each task. mteb (``mteb.models.abs_encoder.get_prompt_name``) asks for
``"{task name}-{query|document}"``, then ``"{task name}"``, then ``"{task type}-{query|document}"``, then
``"{task type}"``, then ``"query"``/``"document"``; symmetric tasks (STS, classification...) encode with no
prompt type. mteb's sentence-transformers wrapper (which embedtrain's evaluation encoder builds on) reads
``model.prompts``, so ``embedtrain eval`` -- or any mteb run of the plain checkpoint -- uses the right
instruction per task with no further configuration.

A training dataset's ``instruction`` becomes its per-column prompts (:func:`dataset_prompts`): the query
side gets the formatted instruction and the passage side nothing, or the instruction too when the dataset
is ``symmetric``.
"""

from __future__ import annotations

from embedtrain.schema.instructions import E5_TEMPLATE, InstructionsConfig

#: MTEB task types whose two sides differ (queries get the instruction, documents nothing).
ASYMMETRIC_TASK_TYPES = frozenset({"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"})

#: Default instruction per MTEB (text) task type, in the e5-mistral manner (our wording).
DEFAULT_TASK_TYPE_INSTRUCTIONS: dict[str, str] = {
    "STS": "Retrieve semantically similar text",
    "Summarization": "Given a news summary, retrieve other semantically similar summaries",
    "PairClassification": "Retrieve text that is semantically similar to the given text",
    "Classification": "Classify the given text by its topic, intent or sentiment",
    "MultilabelClassification": "Classify the given text into all categories that apply",
    "Clustering": "Identify the main topic of the given text",
    "BitextMining": "Retrieve parallel sentences",
    "Retrieval": "Given a query, retrieve relevant passages that answer the query",
    "Reranking": "Given a query, retrieve relevant passages that answer the query",
    "InstructionRetrieval": "Given a query, retrieve relevant passages that answer the query",
}


def dataset_prompts(instruction: str, *, template: str = E5_TEMPLATE, symmetric: bool = False) -> tuple[str, str]:
    """``(query_prompt, passage_prompt)`` of a training dataset with ``instruction``.

    Asymmetric data (query -> passage) prompts only the query (the passage prompt is ``""``); ``symmetric``
    data prompts both sides.
    """
    prompt = template.format(instruction=instruction)
    return prompt, (prompt if symmetric else "")


def task_type(task_name: str) -> str | None:
    """The MTEB type of ``task_name`` from mteb's offline task registry (None when mteb does not know it)."""
    try:
        import mteb

        return mteb.get_task(task_name).metadata.type
    except Exception:  # noqa: BLE001 - unknown names and a missing mteb alike mean "don't know"
        return None


def instruction_prompts(config: InstructionsConfig) -> dict[str, str]:
    """sentence-transformers prompts, keyed as mteb looks them up, for every configured instruction.

    Asymmetric task types get ``"{type}-query"`` (the instruction) and ``"{type}-document"`` (``""``);
    symmetric ones get ``"{type}"``. Task names likewise. ``"query"``/``"document"`` are the retrieval
    instruction and ``""``, so ``model.encode_query`` / ``encode_document`` work outside mteb too.
    """
    types = {**(DEFAULT_TASK_TYPE_INSTRUCTIONS if config.use_defaults else {}), **config.task_types}
    prompts: dict[str, str] = {}
    retrieval = types.get("Retrieval")
    if retrieval:
        prompts["query"] = config.format(retrieval)
        prompts["document"] = ""
    for kind, instruction in types.items():
        if kind in ASYMMETRIC_TASK_TYPES:
            prompts[f"{kind}-query"] = config.format(instruction)
            prompts[f"{kind}-document"] = ""
        else:
            prompts[kind] = config.format(instruction)
    for task, instruction in config.tasks.items():
        if task_type(task) in ASYMMETRIC_TASK_TYPES:
            prompts[f"{task}-query"] = config.format(instruction)
            prompts[f"{task}-document"] = ""
        else:
            prompts[task] = config.format(instruction)
    return prompts
