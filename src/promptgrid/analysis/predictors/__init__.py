"""Analysis-stage predictors, one file each, registered in :data:`promptgrid.registry.PREDICTORS` on import.

A similarity metric runs before any gain exists; these run after, from the gains themselves, so they can say
what a metric must beat to be worth computing: the source's record on other targets (``source_only``), the
task families (``family_only``), chance (``random``), and a ranking fitted on the metrics (``learned``). Each
file registers a :class:`~promptgrid.registry.PredictorSpec` whose ``predict`` takes a :class:`PredictorData`.
No predictor sees the gains of the target it scores: every one that uses gains leaves that target out.
"""
from __future__ import annotations

from dataclasses import dataclass

from promptgrid.lazy import lazy_module

pd = lazy_module("pandas")


#: modules of this package that register nothing (promptgrid.pipeline.plugins skips them)
HELPERS = ("features",)

PREDICTION_COLUMNS = ["backbone", "method", "source", "target", "value"]


@dataclass(frozen=True)
class PredictorData:
    """What a predictor may use.

    outcomes: seed-mean outcome per pair, self-pairs dropped: backbone, method, source, target, gain (score
      points), outcome (the column the method is judged on, ``analysis.outcome`` or relative performance);
    similarity: the metrics, long: backbone, source, target, metric, value (self-pairs dropped);
    families: task -> family (None if unset);
    seed: ``analysis.seed``, for anything random.
    """

    outcomes: pd.DataFrame
    similarity: pd.DataFrame
    families: dict
    seed: int = 0


def predict_all(data: PredictorData, specs) -> pd.DataFrame:
    """Every spec's predictions, long: backbone, method, source, target, metric (the predictor's name), value,
    kind; in spec order."""
    frames = []
    for spec in specs:
        df = spec.predict(data)
        missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"analysis predictor {spec.name!r} returned no columns {missing}")
        frames.append(df[PREDICTION_COLUMNS].assign(metric=spec.name, kind=spec.kind))
    cols = PREDICTION_COLUMNS[:4] + ["metric", "value", "kind"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
