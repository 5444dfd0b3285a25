"""e_con (Su et al.'s E_con): 1 / (1 + Euclidean distance of the flattened prompts)."""
from promptgrid.registry import SIMILARITIES, SimilaritySpec


def matrix(a, b):
    """1 / (1 + ||vec(a) - vec(b)||_2) for every pair: a (A, L, d), b (B, L, d), same L -> (A, B)."""
    import torch

    dist = torch.cdist(a.reshape(len(a), -1), b.reshape(len(b), -1), compute_mode="donot_use_mm_for_euclid_dist")
    return 1.0 / (1.0 + dist)


SIMILARITIES.add(SimilaritySpec(name="e_con", scope="prompt", order=4, matrix=matrix, same_length=True,
                                summary="1 / (1 + distance of the concatenated prompts)",
                                paper="Su et al. 2022, E_con (a distance; promptgrid reports 1 / (1 + d))"))
