"""Task-similarity metrics, one file each, registered in :data:`promptgrid.registry.SIMILARITIES` on import.

Prompt-only metrics give ``matrix(A (Na, L, d), B (Nb, L, d)) -> (Na, Nb)`` (``prompt_math`` is their one
entry point); model-based ones (ON, the PANDA metric) run the backbone. ``seed_pairs`` averages any of
them over seed pairs, as SPoT does.
"""
#: modules of this package that register nothing (promptgrid.pipeline.plugins skips them)
HELPERS = ("prompt_math", "seed_pairs")
