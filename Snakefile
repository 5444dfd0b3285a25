# promptgrid: soft-prompt transferability studies.
# Run the default study:      snakemake --cores 2
# Another study:              snakemake --cores 2 --configfile studies/bigbench-21x9.yaml
# On SLURM:                   snakemake --profile <site> --workflow-profile profiles/slurm --configfile <study>.yaml
# A study file given with --configfile replaces the default study instead of merging into it.
# The rules are wired in workflow/Snakefile (the Snakemake workflow catalog's layout).
# config/config.yaml is the default study (the root config.yaml links to it); snakedeploy copies config/.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# workflow/Snakefile's rule all stays the default target: the include: directive would drop a default target
# set in an included file (snakemake/snakemake#2773), so include it as Snakemake includes a main Snakefile.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
