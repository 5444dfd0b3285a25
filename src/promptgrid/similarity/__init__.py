"""Task-similarity metrics, one file each, registered in :data:`promptgrid.registry.SIMILARITIES` on import.

Prompt-only metrics give ``matrix(A (Na, L, d), B (Nb, L, d)) -> (Na, Nb)`` (``prompt_math`` is their one
entry point; deep prompts (L, D) are compared per key/value block there); model-based ones (ON, the PANDA
metric) run the backbone, with a deep prompt as its key/value prefix. ``seed_pairs`` averages any of them over
seed pairs, as SPoT does.
"""
#: modules of this package that register nothing (promptgrid.pipeline.plugins skips them)
HELPERS = ("prompt_math", "seed_pairs")
