"""family_only: 1 when source and target share a task family (``tasks.<t>.family``), else 0; NaN when either has
none. It knows the families and nothing else."""
from __future__ import annotations

from promptgrid.analysis.predictors import PredictorData
from promptgrid.lazy import lazy_module
from promptgrid.registry import PREDICTORS, PredictorSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")


def predict(data: PredictorData) -> pd.DataFrame:
    pairs = data.outcomes[["backbone", "method", "source", "target"]]
    fam_s = pairs["source"].map(lambda s: data.families.get(s))
    fam_t = pairs["target"].map(lambda t: data.families.get(t))
    known = fam_s.notna() & fam_t.notna()
    value = np.where(known, (fam_s == fam_t).astype(np.float64), np.nan)
    return pairs.assign(value=value)


PREDICTORS.add(PredictorSpec(
    name="family_only", order=20, predict=predict,
    summary="1 if source and target share a task family, else 0: knows the families, not the prompts"))
