"""max (Lin et al. 2024's MAX): for every target token its best cosine among the source tokens, averaged."""
from promptgrid.registry import SIMILARITIES, SimilaritySpec


def matrix(a, b):
    """mean_j max_i cos(a_i, b_j) for every pair: a (A, L_a, d), b (B, L_b, d) -> (A, B). Not symmetric: every
    *target* token looks for its best match among the source tokens."""
    import torch

    from promptgrid.similarity.prompt_math import chunk_rows, unit

    n_a, l_a, d = a.shape
    n_b, l_b, _ = b.shape
    out = torch.empty(n_a, n_b, dtype=torch.float64)
    unit_b = unit(b).reshape(-1, d)
    step = chunk_rows(n_a, l_a * n_b * l_b)
    for i in range(0, n_a, step):
        chunk = unit(a[i:i + step])
        sim = (chunk.reshape(-1, d) @ unit_b.T).reshape(len(chunk), l_a, n_b, l_b)
        out[i:i + step] = sim.max(dim=1).values.mean(dim=-1)
    return out


SIMILARITIES.add(SimilaritySpec(name="max", scope="prompt", order=6, matrix=matrix,
                                summary="mean over target tokens of the best source-token cosine",
                                paper="Lin et al. 2024, MAX"))
