"""Analysis-stage predictors (promptgrid.analysis.predictors): values checked by hand, and the learned ranking
checked to be out-of-sample for the target it scores."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from promptgrid.analysis import correlation
from promptgrid.analysis.predictors import PredictorData, family_only, learned, predict_all, source_only
from promptgrid.analysis.predictors import random as random_predictor
from promptgrid.registry import PREDICTORS, PredictorSpec, Registry

KEY = ["backbone", "method", "source", "target"]

# sources a, b, c, d x targets x, y, z (sources and targets disjoint, so no self-pairs): (b, y) has no row at
# all, (c, z) has a row with a NaN outcome, d was only run on x
GRID = {("a", "x"): 1.0, ("a", "y"): 2.0, ("a", "z"): 4.0,
        ("b", "x"): 3.0, ("b", "z"): 5.0,
        ("c", "x"): 6.0, ("c", "y"): 8.0, ("c", "z"): np.nan,
        ("d", "x"): 7.0}
# source_only by hand: the mean of the source's finite outcomes on the targets other than the pair's own
SOURCE_ONLY = {("a", "x"): (2 + 4) / 2, ("a", "y"): (1 + 4) / 2, ("a", "z"): (1 + 2) / 2,
               ("b", "x"): 5.0, ("b", "z"): 3.0,
               ("c", "x"): 8.0, ("c", "y"): 6.0, ("c", "z"): (6 + 8) / 2,
               ("d", "x"): np.nan}  # d has no other target


def small_outcomes() -> pd.DataFrame:
    """The GRID for two methods (m2's outcomes are 10x m1's) and a second backbone whose outcomes are
    unrelated, so a predictor that mixed groups would show it."""
    rows = []
    for (s, t), v in GRID.items():
        rows.append(("bb", "m1", s, t, v, v))
        rows.append(("bb", "m2", s, t, 10 * v, 10 * v))
        rows.append(("other", "m1", s, t, -100.0, -100.0))
    return pd.DataFrame(rows, columns=KEY + ["gain", "outcome"])


def as_dict(pred: pd.DataFrame, backbone="bb", method="m1") -> dict:
    g = pred[(pred["backbone"] == backbone) & (pred["method"] == method)]
    return {(s, t): v for s, t, v in zip(g["source"], g["target"], g["value"])}


def assert_same(got: dict, expected: dict):
    assert set(got) == set(expected)
    for pair, v in expected.items():
        if math.isnan(v):
            assert math.isnan(got[pair]), pair
        else:
            assert got[pair] == pytest.approx(v), pair


def test_registry_holds_the_four_predictors_in_order():
    specs = PREDICTORS.ordered()
    assert [s.name for s in specs] == ["source_only", "family_only", "random", "learned"]
    assert [s.kind for s in specs] == ["comparator", "comparator", "comparator", "learned"]


def test_source_only_is_the_leave_target_out_mean_by_hand():
    out = small_outcomes()
    pred = source_only.predict(PredictorData(out, pd.DataFrame(), {}))
    assert len(pred) == len(out)  # one row per pair, the missing (b, y) not invented
    assert ("b", "y") not in as_dict(pred)
    assert_same(as_dict(pred), SOURCE_ONLY)
    assert_same(as_dict(pred, method="m2"), {k: 10 * v for k, v in SOURCE_ONLY.items()})
    assert_same(as_dict(pred, backbone="other"), {k: np.nan if k == ("d", "x") else -100.0 for k in GRID})
    # one row per input pair (grouped by backbone and method, so not necessarily in input order)
    assert sorted(map(tuple, pred[KEY].to_numpy())) == sorted(map(tuple, out[KEY].to_numpy()))


def test_family_only_by_hand_and_nan_without_a_family():
    out = small_outcomes()
    families = {"a": "nli", "b": "qa", "c": None, "x": "nli", "y": "qa", "z": "nli"}  # d: not listed
    pred = family_only.predict(PredictorData(out, pd.DataFrame(), families))
    expected = {("a", "x"): 1.0, ("a", "y"): 0.0, ("a", "z"): 1.0, ("b", "x"): 0.0, ("b", "z"): 0.0,
                ("c", "x"): np.nan, ("c", "y"): np.nan, ("c", "z"): np.nan, ("d", "x"): np.nan}
    assert_same(as_dict(pred), expected)
    assert_same(as_dict(pred, method="m2"), expected)
    # with no families at all every value is NaN
    assert family_only.predict(PredictorData(out, pd.DataFrame(), {}))["value"].isna().all()


def test_random_is_reproducible_per_seed_and_differs_across_seeds():
    out = small_outcomes()
    a = random_predictor.predict(PredictorData(out, pd.DataFrame(), {}, seed=3))["value"].to_numpy()
    b = random_predictor.predict(PredictorData(out, pd.DataFrame(), {}, seed=3))["value"].to_numpy()
    c = random_predictor.predict(PredictorData(out, pd.DataFrame(), {}, seed=4))["value"].to_numpy()
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert ((a >= 0) & (a < 1)).all() and len(np.unique(a)) == len(a)
    # a pair's value does not depend on the order of the input rows
    shuffled = out.sample(frac=1.0, random_state=0)
    d = random_predictor.predict(PredictorData(shuffled, pd.DataFrame(), {}, seed=3))
    assert as_dict(d) == pytest.approx(as_dict(random_predictor.predict(PredictorData(out, pd.DataFrame(), {},
                                                                                       seed=3))))


def test_predict_all_long_frame_in_spec_order_and_refuses_a_predictor_without_value():
    out = small_outcomes()
    local = Registry("analysis predictor")
    local.add(PredictorSpec(name="zero", summary="0", order=2, predict=lambda d: d.outcomes[KEY].assign(value=0.0)))
    local.add(PredictorSpec(name="one", summary="1", order=1, kind="learned",
                            predict=lambda d: d.outcomes[KEY].assign(value=1.0, extra="ignored")))
    res = predict_all(PredictorData(out, pd.DataFrame(), {}), local.ordered())
    assert list(res.columns) == KEY + ["metric", "value", "kind"]
    assert res["metric"].tolist() == ["one"] * len(out) + ["zero"] * len(out)
    assert res["kind"].tolist() == ["learned"] * len(out) + ["comparator"] * len(out)
    assert res["value"].tolist() == [1.0] * len(out) + [0.0] * len(out)

    local.add(PredictorSpec(name="bad", summary="no value", order=3,
                            predict=lambda d: d.outcomes[KEY].assign(score=1.0)))
    with pytest.raises(ValueError, match=r"'bad'.*value"):
        predict_all(PredictorData(out, pd.DataFrame(), {}), local.ordered())
    fake = SimpleNamespace(name="fake", kind="comparator", predict=lambda d: d.outcomes[["source", "target"]])
    with pytest.raises(ValueError, match=r"'fake'.*backbone.*method.*value"):
        predict_all(PredictorData(out, pd.DataFrame(), {}), [fake])
    empty = predict_all(PredictorData(out, pd.DataFrame(), {}), [])
    assert empty.empty and list(empty.columns) == KEY + ["metric", "value", "kind"]


def random_world(seed: int, S: int = 6, T: int = 6, perfect: bool = False):
    """Outcomes (S sources x T targets, sources != targets) and two metrics; with ``perfect`` the first metric
    is a monotone transform of the outcome inside every target (its within-target order), the second noise."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(S, T))
    sources, targets = [f"s{i}" for i in range(S)], [f"t{j}" for j in range(T)]
    rows, sim = [], []
    for i, s in enumerate(sources):
        for j, t in enumerate(targets):
            rows.append(("bb", "m", s, t, Y[i, j], Y[i, j]))
            first = float(np.argsort(np.argsort(Y[:, j]))[i]) if perfect else rng.normal()
            sim.append(("bb", s, t, "first", first))
            sim.append(("bb", s, t, "noise", rng.normal()))
    families = {**{s: ("f0" if i % 2 else "f1") for i, s in enumerate(sources)},
                **{t: ("f0" if j % 2 else "f1") for j, t in enumerate(targets)}}
    return (pd.DataFrame(rows, columns=KEY + ["gain", "outcome"]),
            pd.DataFrame(sim, columns=["backbone", "source", "target", "metric", "value"]), families)


def learned_grid(out, sim, families) -> pd.DataFrame:
    pred = learned.predict(PredictorData(out, sim, families))
    return pred.pivot(index="source", columns="target", values="value")


def test_learned_is_out_of_sample_for_the_target_it_scores():
    out, sim, families = random_world(0)
    before = learned_grid(out, sim, families)
    assert np.isfinite(before.to_numpy()).all()
    h = "t2"
    changed = out.copy()
    rows = changed["target"] == h
    changed.loc[rows, "outcome"] = np.random.default_rng(9).normal(size=int(rows.sum())) * 5
    after = learned_grid(changed, sim, families)
    # h's own gains enter neither its features nor its fit: its scores are unchanged, to the bit
    assert np.array_equal(before[h].to_numpy(), after[h].to_numpy())
    # every other target was fitted on h's outcomes (and its source-mean feature reads them): they move
    for t in before.columns.drop(h):
        assert not np.allclose(before[t].to_numpy(), after[t].to_numpy()), t


def test_learned_recovers_a_metric_that_orders_every_target():
    out, sim, families = random_world(1, perfect=True)
    scores = learned_grid(out, sim, families)
    Y = out.pivot(index="source", columns="target", values="outcome").loc[scores.index, scores.columns]
    rhos = [spearmanr(scores[t], Y[t])[0] for t in scores.columns]
    assert rhos == pytest.approx([1.0] * len(rhos))
    # the noise metric alone would not do this
    noise = sim[sim["metric"] == "noise"].pivot(index="source", columns="target", values="value")
    assert np.mean([spearmanr(noise[t], Y[t])[0] for t in scores.columns]) < 0.5


def test_learned_leaves_targets_nan_below_two_training_targets():
    out, sim, families = random_world(2, S=4, T=2)
    pred = learned.predict(PredictorData(out, sim, families))
    assert len(pred) == 8 and pred["value"].isna().all()


def predictor_world():
    """5 tasks, each a source and a target, two metrics and two seeds of vanilla gains."""
    rng = np.random.default_rng(5)
    tasks = ["A", "B", "C", "D", "E"]
    sim, tr = [], []
    for s in tasks:
        for t in tasks:
            v = rng.normal()
            sim.append(("b", s, t, "cos", v))
            sim.append(("b", s, t, "noise", rng.normal()))
            for seed in (0, 1):
                tr.append(("b", s, t, "vanilla", seed, 2 * v + rng.normal(), 1.0))
    return (pd.DataFrame(sim, columns=["backbone", "source", "target", "metric", "value"]),
            pd.DataFrame(tr, columns=["backbone", "source", "target", "method", "seed", "gain",
                                      "relative_performance"]),
            {"A": "x", "B": "x", "C": "y", "D": "y", "E": None})


def test_correlation_table_with_predictor_rows():
    sim, tr, families = predictor_world()
    pred = correlation.predictor_rows(sim, tr, families, seed=0)
    assert list(pred.columns) == KEY + ["metric", "value", "kind"]
    assert (pred["source"] != pred["target"]).all() and len(pred) == 4 * 20
    c = correlation.correlation_table(sim, tr, n_permutations=200, n_bootstrap=50, seed=0, predictors=pred)
    assert list(c.columns) == correlation.CORRELATION_COLUMNS
    kinds = c.drop_duplicates("metric").set_index("metric")["kind"].to_dict()
    assert kinds == {"cos": "metric", "noise": "metric", "source_only": "comparator", "family_only": "comparator",
                     "random": "comparator", "learned": "learned"}
    pooled = c[c["target"] == "pooled"].set_index("metric")
    per_target = c[c["target"] != "pooled"]
    for name, row in pooled.iterrows():
        rows = per_target[per_target["metric"] == name]
        assert (rows["n_targets"] == 1).all()
        assert row["n"] == rows["n"].sum(), name
        assert row["n_targets"] == (rows["n"] > 0).sum(), name  # a target with no pair keeps a row, n = 0
        assert row["n_sources"] == (4 if name == "family_only" else 5), name
        assert row["permutations"] == 120 and row["exact"]  # 5! <= 200: every ordering of the sources
        for k in ("pearson", "spearman", "kendall"):
            assert row[f"{k}_p_maxt"] >= row[f"{k}_p"] - 1e-12, (name, k)
            assert rows[f"{k}_p_maxt"].isna().all() and rows.loc[rows["n"] >= 3, f"{k}_p"].notna().all()
    # family_only is NaN for E (no family) in either role: only pairs within A-D remain, 4 targets x 3 sources
    assert pooled.loc["family_only", "n"] == 12 and pooled.loc["family_only", "n_targets"] == 4
    assert pooled.loc["learned", "n"] == 20
    # the predictors' rows follow the metrics', in registry order
    assert list(pd.unique(c["metric"])) == ["cos", "noise", "source_only", "family_only", "random", "learned"]
