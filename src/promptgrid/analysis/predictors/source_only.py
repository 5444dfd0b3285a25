"""source_only: a source's mean outcome on the other targets (leave one target out). It knows nothing about
the target, only which sources are generally useful; a similarity metric that does not beat it is not telling
us about the pair."""
from __future__ import annotations

from promptgrid.analysis.predictors import PredictorData
from promptgrid.analysis.predictors.features import long_pairs, outcome_grid, source_means
from promptgrid.lazy import lazy_module
from promptgrid.registry import PREDICTORS, PredictorSpec

pd = lazy_module("pandas")


def predict(data: PredictorData) -> pd.DataFrame:
    frames = []
    for _, g in data.outcomes.groupby(["backbone", "method"], sort=False):
        frames.append(g[["backbone", "method", "source", "target"]].assign(
            value=long_pairs(source_means(outcome_grid(g)), g)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["backbone", "method", "source", "target", "value"])


PREDICTORS.add(PredictorSpec(
    name="source_only", order=10, predict=predict,
    summary="the source's mean outcome on the other targets (leave one target out): knows the source, not the pair"))
