"""e_ave (Su et al.'s E_ave): 1 / (1 + mean Euclidean distance over all pairs of prompt tokens)."""
from promptgrid.registry import SIMILARITIES, SimilaritySpec


def matrix(a, b):
    """1 / (1 + (1 / (L_s L_t)) sum_ij ||a_i - b_j||_2) for every pair: a (A, L_a, d), b (B, L_b, d) -> (A, B);
    the (L_a, B, L_b) distances are formed a chunk of sources at a time."""
    import torch

    from promptgrid.similarity.prompt_math import chunk_rows

    n_a, l_a, d = a.shape
    n_b, l_b, _ = b.shape
    out = torch.empty(n_a, n_b, dtype=torch.float64)
    flat_b = b.reshape(-1, d)
    step = chunk_rows(n_a, l_a * n_b * l_b)
    for i in range(0, n_a, step):
        chunk = a[i:i + step]
        dist = torch.cdist(chunk.reshape(-1, d), flat_b).reshape(len(chunk), l_a, n_b, l_b)
        out[i:i + step] = 1.0 / (1.0 + dist.mean(dim=(1, 3)))
    return out


SIMILARITIES.add(SimilaritySpec(name="e_ave", scope="prompt", order=5, matrix=matrix,
                                summary="1 / (1 + mean distance over all token pairs)",
                                paper="Su et al. 2022, E_ave (a distance; promptgrid reports 1 / (1 + d))"))
