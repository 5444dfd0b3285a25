# Validates the study config while the DAG is built and provides W, the helper every rule reads
# (promptgrid.pipeline.dag.Workflow): paths from promptgrid.storage.layout, config hashes from
# promptgrid.config.stages, methods / metrics / figures from promptgrid.registry.
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from promptgrid.config import ConfigError
from promptgrid.pipeline.dag import SchemaError, Workflow
from promptgrid.storage import layout

min_version("9.0")

try:
    W = Workflow.from_snakemake(config, workflow.configfiles)
except SchemaError as err:
    raise WorkflowError(str(err))
except (ConfigError, FileNotFoundError, ValueError) as err:
    raise WorkflowError(f"invalid study config: {err}")
R = W.R
CFG = W.cfg
CONFIG_JSON = W.config_json
ENV = "../../envs/promptgrid.yaml"


wildcard_constraints:
    backbone=W.alternatives(W.backbones),
    task=W.alternatives(CFG.tasks),
    source=W.alternatives(W.fetched_sources),
    target=W.alternatives(CFG.targets),
