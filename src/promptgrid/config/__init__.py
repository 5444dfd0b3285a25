"""Study configuration: typed sections (``sections``), each key declared once (``fields``), the study and its
loader (``study``), the JSON schema (``schema``) and ``config/README.md`` (``docs``) generated from them, and
which config sections feed each stage's rerun hash (``stages``). The names below are the package's public face.

Method and similarity names are validated against :mod:`promptgrid.registry`: load the plugins first
(:func:`promptgrid.pipeline.plugins.load`), as every entry point does.
"""
from promptgrid.config.fields import ConfigError
from promptgrid.config.schema import config_schema, schema_errors
from promptgrid.config.sections import (
                                        ATTENTIONS,
                                        BACKBONE_KINDS,
                                        KIND_SCORES,
                                        PRECISIONS,
                                        RENAMED_VALUES,
                                        RETIRED_KEYS,
                                        TASK_KINDS,
                                        AnalysisConfig,
                                        BackboneConfig,
                                        CrossModelConfig,
                                        JobsConfig,
                                        MetricsConfig,
                                        PromptConfig,
                                        TaskConfig,
                                        TrainingConfig,
                                        TransferConfig,
)
from promptgrid.config.study import StudyConfig, default_cache_dir, load_config, stable_hash

__all__ = ["ATTENTIONS", "BACKBONE_KINDS", "KIND_SCORES", "PRECISIONS", "RENAMED_VALUES", "RETIRED_KEYS",
           "TASK_KINDS", "AnalysisConfig", "BackboneConfig", "ConfigError", "CrossModelConfig", "JobsConfig",
           "MetricsConfig", "PromptConfig", "StudyConfig", "TaskConfig", "TrainingConfig", "TransferConfig",
           "config_schema", "default_cache_dir", "load_config", "schema_errors", "stable_hash"]
