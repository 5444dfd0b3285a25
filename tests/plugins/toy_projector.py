"""A cross-model projector written as a study plugin, the way a researcher adds one: this file alone, named in the
study's ``plugins:`` and ``cross_model.projectors``. Each output token is tanh of a per-token linear map."""
from promptgrid.registry import PROJECTORS, ProjectorSpec


def build(length: int, d_a: int, d_b: int, hidden: int, out_scale: float):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(d_a, d_b), torch.nn.Tanh())


PROJECTORS.add(ProjectorSpec(name="toy_tanh", order=9, build=build, summary="tanh(W P_i + b), token by token",
                             paper="none: the test suite's plugin"))
