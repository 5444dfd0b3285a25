"""c_con (Su et al.'s C_con): the cosine of the two flattened prompts vec(P_s), vec(P_t)."""
from promptgrid.registry import SIMILARITIES, SimilaritySpec


def matrix(a, b):
    """cos(vec(a), vec(b)) for every pair: a (A, L, d), b (B, L, d), same L -> (A, B)."""
    from promptgrid.similarity.prompt_math import unit

    return unit(a.reshape(len(a), -1)) @ unit(b.reshape(len(b), -1)).T


SIMILARITIES.add(SimilaritySpec(name="c_con", scope="prompt", order=3, matrix=matrix, same_length=True,
                                summary="cosine of the concatenated (flattened) prompts",
                                paper="Su et al. 2022, C_con"))
