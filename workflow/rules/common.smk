# Validates the study config while the DAG is built and provides W, the helper every rule reads
# (promptgrid.pipeline.dag.Workflow): paths from promptgrid.storage.layout, config hashes from
# promptgrid.config.stages, methods / metrics / figures from promptgrid.registry.
import os
import shutil
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version

min_version("9.0")

# The Python that runs Snakemake needs promptgrid only to build the DAG, which imports none of its heavy
# dependencies: without the package installed (a catalog lint, a checkout used as a module, the conda route)
# it comes from this checkout's src/. A module read from a git host has no src/ on disk to take.
try:
    import promptgrid
except ModuleNotFoundError as err:
    if err.name != "promptgrid":
        raise
    PROMPTGRID_SRC = os.path.normpath(os.path.join(str(workflow.current_basedir), "..", "..", "src"))
    if not os.path.isfile(os.path.join(PROMPTGRID_SRC, "promptgrid", "__init__.py")):
        base = workflow.current_basedir
        ref = getattr(base, "ref", None)  # the tag, commit or branch the module names
        if getattr(base, "repo_path", None):  # gitfile(...): a local git repository
            url = f"git+file://{os.path.abspath(base.repo_path)}@{ref}"
        elif getattr(base, "host", None):  # github(...) / gitlab(...)
            url = f"git+https://{base.host}/{base.repo}@{ref}"
        else:
            url = "git+https://<host>/<owner>/promptgrid@<tag>"
        raise WorkflowError(
            f"promptgrid is not installed in the Python that runs Snakemake ({sys.executable}); install the "
            f'release this module uses: pip install "promptgrid @ {url}" (torch first, README: "Using promptgrid '
            f'as a Snakemake module"). Its workflow at {base} has no src/ folder on disk to build the DAG from.'
        )
    sys.path.insert(0, PROMPTGRID_SRC)
    uses_conda = any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method)
    if shutil.which("promptgrid") is None and not uses_conda:
        logger.warning(
            f"promptgrid is not installed: the DAG is built from {PROMPTGRID_SRC}, but the jobs run the "
            f"promptgrid command, which is not on PATH. Install it (pip install {os.path.dirname(PROMPTGRID_SRC)}, "
            "torch first) or run with --software-deployment-method conda."
        )
else:
    PROMPTGRID_SRC = None

from promptgrid.config import ConfigError
from promptgrid.pipeline.dag import SchemaError, Workflow
from promptgrid.storage import layout

try:
    W = Workflow.from_snakemake(
        config,
        workflow.configfiles,
        workflow.overwrite_configfiles,
        workflow.config_settings.replace_workflow_config,
        model_stack=PROMPTGRID_SRC is None,
    )
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
