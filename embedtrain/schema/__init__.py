"""Typed configuration: recipes (one model per training stage), their sections, and task-config files.

This package is a leaf: it imports pydantic, PyYAML and :mod:`embedtrain.errors`, never a feature package,
so every part of embedtrain can use the schema without import cycles.
"""

from embedtrain.schema.base import LocatedModel, StrictModel, load_config_file, parse_overrides
from embedtrain.schema.data import (
    DataFormat,
    DatasetConfig,
    EvaluatorConfig,
    FileType,
    PromptsConfig,
    TextDatasetConfig,
)
from embedtrain.schema.decoder import LatentAttentionConfig, ModelLoraConfig, ModelOptions
from embedtrain.schema.distill import DistillConfig, ScorerConfig, TeacherConfig
from embedtrain.schema.evaluation import EvalConfig, LocalTaskSpec, TaskConfigFile
from embedtrain.schema.instructions import InstructionsConfig
from embedtrain.schema.loss import LossConfig
from embedtrain.schema.mining import DatasetMiningConfig, DynamicMiningConfig, NegativeFilter, OfflineMiningConfig
from embedtrain.schema.model import ModelConfig
from embedtrain.schema.recipe import (
    RECIPE_CLASSES,
    ContrastiveRecipe,
    DistillRecipe,
    Recipe,
    RecipeBase,
    SmaeRecipe,
    TaskRecipe,
    load_recipe,
)
from embedtrain.schema.smae import SmaeConfig
from embedtrain.schema.speed import SpeedConfig
from embedtrain.schema.tasks import LoraSpec, TaskConfig

__all__ = [
    "RECIPE_CLASSES", "ContrastiveRecipe", "DataFormat", "DatasetConfig", "DatasetMiningConfig",
    "DistillConfig", "DistillRecipe",
    "DynamicMiningConfig", "EvalConfig", "EvaluatorConfig", "FileType", "InstructionsConfig",
    "LatentAttentionConfig", "LocalTaskSpec", "LocatedModel", "LoraSpec", "LossConfig", "ModelConfig",
    "ModelLoraConfig", "ModelOptions", "NegativeFilter", "OfflineMiningConfig", "PromptsConfig", "Recipe",
    "RecipeBase", "ScorerConfig", "SmaeConfig", "SmaeRecipe", "SpeedConfig", "StrictModel", "TaskConfig",
    "TaskConfigFile", "TaskRecipe", "TeacherConfig",
    "TextDatasetConfig", "load_config_file", "load_recipe", "parse_overrides",
]
