"""token_cos (Su et al.'s C_ave): the mean cosine over all pairs of prompt tokens."""
from promptgrid.registry import SIMILARITIES, SimilaritySpec


def matrix(a, b):
    """(1 / (L_s L_t)) sum_ij cos(a_i, b_j) for every pair: a (A, L, d), b (B, L, d) -> (A, B).

    mean_ij u_i . v_j = (mean_i u_i) . (mean_j v_j), so no (L, L) matrix is formed."""
    from promptgrid.similarity.prompt_math import unit

    return unit(a).mean(1) @ unit(b).mean(1).T


SIMILARITIES.add(SimilaritySpec(name="token_cos", scope="prompt", order=2, matrix=matrix,
                                summary="mean cosine over all token pairs",
                                paper="Su et al. 2022, C_ave (average of token-wise cosines)"))
