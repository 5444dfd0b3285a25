"""The per-token linear projector: ``g(P)_i = W P_i + b`` for i = 1..L.

Parameters ``body.weight`` W (d_b, d_a) and ``body.bias`` b (d_b,), shared by all L positions (so the
length only fixes the accepted input shape): token i of the output sees token i of the input alone.
The baseline a projector that mixes tokens has to beat.
"""
from __future__ import annotations

from promptgrid.registry import PROJECTORS, ProjectorSpec


def build(length: int, d_a: int, d_b: int, hidden: int, out_scale: float):
    """(N, L, d_a) -> (N, L, d_b): ``torch.nn.Linear`` acts on the last dimension, token by token."""
    import torch

    return torch.nn.Linear(d_a, d_b)


PROJECTORS.add(ProjectorSpec(
    name="linear", order=1, build=build,
    summary="one linear map applied to each prompt token on its own",
    paper="none: the per-token baseline for Su et al.'s two-layer projector"))
