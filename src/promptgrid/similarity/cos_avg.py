"""cos_avg (SPoT's task-embedding similarity): the cosine of the two prompts' mean vectors."""
from promptgrid.registry import SIMILARITIES, SimilaritySpec


def matrix(a, b):
    """cos(mean_i a_i, mean_j b_j) for every pair: a (A, L, d), b (B, L, d) float64 -> (A, B)."""
    from promptgrid.similarity.prompt_math import unit

    return unit(a.mean(1)) @ unit(b.mean(1)).T


SIMILARITIES.add(SimilaritySpec(name="cos_avg", scope="prompt", order=1, matrix=matrix,
                                summary="cosine of the mean prompt vectors",
                                paper="SPoT (Vu et al. 2022) task embedding: cosine of the averaged prompt"))
