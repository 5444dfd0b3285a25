# promptgrid: soft-prompt transferability studies.
# Run the default study:      snakemake --cores 2
# Another study:              snakemake --cores 2 --configfile studies/bigbench-21x9.yaml
# On SLURM:                   snakemake --workflow-profile profiles/slurm --configfile <study>.yaml
# A study file given with --configfile replaces the default study instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/crossmodel.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        W.final_outputs(),
    localrule: True
