"""Study configuration: typed sections (``sections``), the study and its loader (``study``), and which config
sections feed each stage's rerun hash (``stages``). The names below are the package's public face.

Method and similarity names are validated against :mod:`promptgrid.registry`: load the plugins first
(:func:`promptgrid.pipeline.plugins.load`), as every entry point does.
"""
from promptgrid.config.sections import (
                                        ATTENTIONS,
                                        BACKBONE_KINDS,
                                        KIND_METRICS,
                                        PRECISIONS,
                                        RENAMED_VALUES,
                                        RETIRED_KEYS,
                                        TASK_KINDS,
                                        AnalysisConfig,
                                        BackboneConfig,
                                        ConfigError,
                                        CrossModelConfig,
                                        JobsConfig,
                                        MetricsConfig,
                                        PromptConfig,
                                        TaskConfig,
                                        TrainingConfig,
                                        TransferConfig,
)
from promptgrid.config.study import StudyConfig, default_cache_dir, load_config, schema_errors, stable_hash

__all__ = ["ATTENTIONS", "BACKBONE_KINDS", "KIND_METRICS", "PRECISIONS", "RENAMED_VALUES", "RETIRED_KEYS",
           "TASK_KINDS", "AnalysisConfig", "BackboneConfig", "ConfigError", "CrossModelConfig", "JobsConfig",
           "MetricsConfig", "PromptConfig", "StudyConfig", "TaskConfig", "TrainingConfig", "TransferConfig",
           "default_cache_dir", "load_config", "schema_errors", "stable_hash"]
