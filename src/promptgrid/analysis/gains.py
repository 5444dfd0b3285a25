"""Tables of the analysis: realised transfer gains, metric-gain correlations, metric comparisons,
retrieval quality, and a one-paragraph summary. Inputs and outputs are long-format DataFrames
in the shapes of the contracts (transfer / similarity / curves / correlation / retrieval).

Conventions shared by every function:
* self-pairs (source == target) are left out of correlations, comparisons and retrieval;
* a method's outcome for a (source, target) pair is its mean over seeds; correlations use the column
  its spec is judged on (``MethodSpec.outcome_column``: a gain, or relative_performance, Su et al.'s
  transferability); retrieval always uses the gain in score points;
* mixture rows of methods that are not per source (spot_topk's "top{k}") match no similarity row and so
  drop out of the correlation, comparison and retrieval tables.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.registry import METHODS

TRANSFER_COLUMNS = ["backbone", "source", "target", "method", "seed", "score", "baseline_score", "gain", "rer",
                    "relative_performance", "steps_to_baseline", "reached_at_start", "baseline_steps", "speedup",
                    "early_gain", "auc_gain"]



_DEV_TOL = 1e-9  # dev scores equal up to float noise count as "reached"


def require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(df.columns)})")


def no_duplicates(df: pd.DataFrame, key: Sequence[str], name: str) -> None:
    dup = df.duplicated(list(key), keep=False)
    if dup.any():
        first = df.loc[dup, list(key)].iloc[0].to_dict()
        raise ValueError(f"{name} has {int(dup.sum())} rows sharing a key {list(key)}, e.g. {first}")


def _curve_steps(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: the baseline's best dev score, the step it first reached it, and the run's first
    step with dev_score >= that best. Curves are in the curves.parquet format."""
    require_columns(curves, ["backbone", "task", "source", "method", "seed", "step", "dev_score"], "curves")
    curves = curves.dropna(subset=["dev_score"])
    base = curves[curves["method"] == "baseline"]
    best = base.groupby(["backbone", "task", "seed"], sort=False)["dev_score"].max().rename("best_dev").reset_index()
    at_best = base.merge(best, on=["backbone", "task", "seed"])
    at_best = at_best[at_best["dev_score"] >= at_best["best_dev"] - _DEV_TOL]
    base_steps = at_best.groupby(["backbone", "task", "seed"], sort=False)["step"].min().rename("baseline_steps")
    best = best.merge(base_steps.reset_index(), on=["backbone", "task", "seed"]).rename(columns={"task": "target"})

    run_curves = curves[curves["method"] != "baseline"].rename(columns={"task": "target"})
    run_curves = run_curves.merge(best[["backbone", "target", "seed", "best_dev"]], on=["backbone", "target", "seed"])
    reached = run_curves[run_curves["dev_score"] >= run_curves["best_dev"] - _DEV_TOL]
    key = ["backbone", "source", "target", "method", "seed"]
    first = reached.groupby(key, sort=False)["step"].min().rename("steps_to_baseline").reset_index()
    out = runs[key].merge(best[["backbone", "target", "seed", "baseline_steps"]], on=["backbone", "target", "seed"],
                          how="left").merge(first, on=key, how="left")
    return out


def _curve_outcomes(runs: pd.DataFrame, curves: pd.DataFrame, early_step: int) -> pd.DataFrame:
    """Per run, from the dev curves: early_gain = its dev score minus the baseline's (same target and seed) at
    the last evaluation at or before ``early_step``; auc_gain = the mean of that difference over the
    evaluation steps both curves have (the area between the learning curves, per step)."""
    key = ["backbone", "source", "target", "method", "seed"]
    curves = curves.dropna(subset=["dev_score"]).rename(columns={"task": "target"})
    base = curves[curves["method"] == "baseline"][["backbone", "target", "seed", "step", "dev_score"]]
    run = curves[curves["method"] != "baseline"].merge(base, on=["backbone", "target", "seed", "step"],
                                                         suffixes=("", "_base"))
    run["diff"] = run["dev_score"] - run["dev_score_base"]
    auc = run.groupby(key, sort=False)["diff"].mean().rename("auc_gain")
    early = run[run["step"] <= early_step].sort_values("step").groupby(key, sort=False)["diff"].last()
    out = runs[key].merge(auc.reset_index(), on=key, how="left")
    return out.merge(early.rename("early_gain").reset_index(), on=key, how="left")


def compute_gains(runs: pd.DataFrame, baselines: pd.DataFrame, curves: Optional[pd.DataFrame] = None,
                  early_step: int = 0) -> pd.DataFrame:
    """The transfer table (transfer.parquet columns, in that order), one row per run.

    runs: one row per transfer run, columns backbone, source, target, method, seed, score
      (0-100 test score; for spot_topk the source is "top{k}"); other columns are ignored.
    baselines: the target's own prompt, columns backbone, target (or task), seed, score.
    curves: optional curves.parquet frame (backbone, task, source, method, seed, step,
      dev_score, ...); baseline rows have method "baseline". Without it the step columns are NaN.

    gain = score - baseline_score; rer = gain / (100 - baseline_score) (NaN if the baseline is
    100); relative_performance = score / baseline_score (NaN if the baseline is 0);
    baseline_steps = first step at which the baseline run reached its own best dev score;
    steps_to_baseline = first step at which this run's dev score >= that best (NaN if never, if
    the curve is missing, and always for a method that scores prompts unchanged); reached_at_start = the run was already there at
    step 0 (its initial prompt matched the baseline's best: no training needed, so no finite speed-up);
    speedup = baseline_steps / steps_to_baseline for runs that reached it after step 0 (NaN otherwise);
    early_gain and auc_gain are dev-score outcomes (:func:`_curve_outcomes`; NaN without curves, as
    for a method that scores prompts unchanged).
    """
    require_columns(runs, ["backbone", "source", "target", "method", "seed", "score"], "runs")
    if "target" not in baselines.columns and "task" in baselines.columns:
        baselines = baselines.rename(columns={"task": "target"})
    require_columns(baselines, ["backbone", "target", "seed", "score"], "baselines")
    unknown = sorted(set(runs["method"]) - set(METHODS))
    if unknown:
        raise ValueError(f"runs: unknown transfer methods {unknown}; registered: {list(METHODS)}")
    key = ["backbone", "source", "target", "method", "seed"]
    no_duplicates(runs, key, "runs")
    no_duplicates(baselines, ["backbone", "target", "seed"], "baselines")

    base = baselines[["backbone", "target", "seed", "score"]].rename(columns={"score": "baseline_score"})
    df = runs[key + ["score"]].merge(base, on=["backbone", "target", "seed"], how="left")
    missing = df[df["baseline_score"].isna()]
    if len(missing):
        combos = missing[["backbone", "target", "seed"]].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"no baseline score for {len(missing)} runs, e.g. (backbone, target, seed) = {combos}")

    score = df["score"].to_numpy(np.float64)
    base_score = df["baseline_score"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["gain"] = score - base_score
        df["rer"] = np.where(base_score == 100.0, np.nan, (score - base_score) / (100.0 - base_score))
        df["relative_performance"] = np.where(base_score == 0.0, np.nan, score / base_score)

    if curves is not None:
        df = df.merge(_curve_steps(runs, curves), on=key, how="left")
        df = df.merge(_curve_outcomes(runs, curves, early_step), on=key, how="left")
    else:
        df[["baseline_steps", "steps_to_baseline", "early_gain", "auc_gain"]] = np.nan
    scored_unchanged = [m for m in df["method"].unique() if not METHODS.require(m).trains]
    df.loc[df["method"].isin(scored_unchanged), "steps_to_baseline"] = np.nan  # no training, no steps
    steps = df["steps_to_baseline"].to_numpy(np.float64)
    df["reached_at_start"] = steps == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        df["speedup"] = np.where(steps > 0, df["baseline_steps"].to_numpy(np.float64) / steps, np.nan)
    df["seed"] = df["seed"].astype(np.int64)
    for col in ("score", "baseline_score", "steps_to_baseline", "baseline_steps", "early_gain", "auc_gain"):
        df[col] = df[col].astype(np.float64)
    return df[TRANSFER_COLUMNS].reset_index(drop=True)


def aggregate_gains(transfer: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof = 1; NaN with one seed) over seeds per (backbone, source, target, method).

    Columns: backbone, source, target, method, n_seeds, n_reached (seeds whose run reached the
    baseline's best dev score), n_reached_at_start (of those, the ones already there at step 0), then
    <col>_mean, <col>_std for score, baseline_score, gain, rer, relative_performance, speedup, and
    speedup_median. The speed-up columns cover the seeds that reached the baseline after step 0, so
    read them with n_reached and n_reached_at_start.
    """
    require_columns(transfer, TRANSFER_COLUMNS, "transfer")
    key = ["backbone", "source", "target", "method"]
    cols = ["score", "baseline_score", "gain", "rer", "relative_performance", "speedup", "early_gain", "auc_gain"]
    g = transfer.groupby(key, sort=False)
    out = g.size().rename("n_seeds").to_frame()
    out["n_reached"] = g["steps_to_baseline"].count()
    out["n_reached_at_start"] = g["reached_at_start"].sum().astype(np.int64)
    for col in cols:
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_std"] = g[col].std(ddof=1)
    out["speedup_median"] = g["speedup"].median()
    return out.reset_index()
