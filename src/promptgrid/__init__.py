"""promptgrid: soft-prompt transferability studies as a Snakemake pipeline."""
__version__ = "0.1.0"
