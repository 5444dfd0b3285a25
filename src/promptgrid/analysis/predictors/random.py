"""random: a seeded uniform score per pair (``analysis.seed``), the floor any predictor must clear. The retrieval
table's ``random`` column gives the exact expectation of a random pick; this is one draw, so its correlation
shows how far chance alone goes at the study's size."""
from __future__ import annotations

from promptgrid.analysis.predictors import PredictorData
from promptgrid.lazy import lazy_module
from promptgrid.registry import PREDICTORS, PredictorSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")


def predict(data: PredictorData) -> pd.DataFrame:
    pairs = data.outcomes[["backbone", "method", "source", "target"]]
    order = pairs.sort_values(["backbone", "method", "target", "source"], kind="stable").index
    values = pd.Series(np.random.default_rng(data.seed).uniform(size=len(pairs)), index=order)
    return pairs.assign(value=values.reindex(pairs.index).to_numpy())


PREDICTORS.add(PredictorSpec(name="random", order=30, predict=predict,
                             summary="a seeded uniform score per pair: chance"))
