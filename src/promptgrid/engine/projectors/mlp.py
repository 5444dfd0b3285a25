"""Su et al.'s v1 projector, which mixes all tokens:
``g(P) = LayerNorm_rows(reshape(W2 tanh(W1 vec(P) + b1) + b2, (L, d_b)))``.

Shapes, for one prompt P (L, d_a):
- ``x = vec(P)`` (L*d_a,), row-major: token i fills ``x[i*d_a:(i+1)*d_a]``;
- ``h = tanh(W1 x + b1)`` (hidden,), ``body.fc1.weight`` W1 (hidden, L*d_a), ``body.fc1.bias`` b1 (hidden,);
- ``y = W2 h + b2`` (L*d_b,), ``body.fc2.weight`` W2 (L*d_b, hidden), ``body.fc2.bias`` b2 (L*d_b,);
- ``Y = y.reshape(L, d_b)`` (row-major again), and each row is layer-normalised on its own:
  ``g(P)_i = (Y_i - mean(Y_i)) / sqrt(var(Y_i) + eps) * gamma + beta`` with the biased variance over the d_b
  entries, ``body.norm.weight`` gamma (d_b,), ``body.norm.bias`` beta (d_b,), eps = 1e-5.

``out_scale`` initialises gamma (torch's default is 1). Without it every projected row has unit standard
deviation, which suits BERT-type models (their embeddings pass a LayerNorm anyway) but is about 8x the
embedding scale of a Llama-type model such as SmolLM2; the job passes backbone B's typical embedding-row std
so task tuning starts from prompts of the right size.
"""
from __future__ import annotations

from promptgrid.registry import PROJECTORS, ProjectorSpec

EPS = 1e-5


def build(length: int, d_a: int, d_b: int, hidden: int, out_scale: float):
    """(N, L, d_a) -> (N, L, d_b), the layers named as in the formula above."""
    from collections import OrderedDict

    import torch

    if hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden}")
    body = torch.nn.Sequential(OrderedDict([
        ("vec", torch.nn.Flatten(1)),  # (N, L*d_a), token 0 first
        ("fc1", torch.nn.Linear(length * d_a, hidden)),
        ("tanh", torch.nn.Tanh()),
        ("fc2", torch.nn.Linear(hidden, length * d_b)),
        ("rows", torch.nn.Unflatten(1, (length, d_b))),
        ("norm", torch.nn.LayerNorm(d_b, eps=EPS)),
    ]))
    with torch.no_grad():
        body.norm.weight.fill_(out_scale)
    return body


PROJECTORS.add(ProjectorSpec(
    name="mlp", order=2, build=build,
    summary="two layers over the whole flattened prompt (tanh), each output token layer-normalised",
    paper="Su et al. (2022) cross-model projector v1; the LayerNorm gain starts at backbone B's embedding scale "
          "(out_scale) rather than 1"))
