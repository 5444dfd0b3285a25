"""End to end: the tiny real study (real MiniLM, real BIG-bench) through Snakemake, twice.

Checks the results contract (schemas, every pair present), that the same config and seed give
identical tables, that outputs carry provenance, and that a config change reruns exactly the jobs
that read the changed section.
"""
import hashlib
import json
import subprocess

import pandas as pd
import pytest
import yaml
from dag_counts import expected_counts, job_counts

from promptgrid.analysis.correlation import CORRELATION_COLUMNS, RETRIEVAL_COLUMNS  # noqa: F401 (the contract)
from promptgrid.analysis.gains import TRANSFER_COLUMNS
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt, read_table_meta

pytestmark = pytest.mark.slow


def run_study(repo, env, config_file, *extra, dry=False):
    args = ["snakemake", "--configfile", str(config_file), "--cores", "2"]
    if dry:
        args += ["-n", "--quiet", "rules"]
    out = subprocess.run(args + list(extra), cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout + out.stderr


def study_copy(repo, tmp, name):
    raw = yaml.safe_load((repo / "tests/studies/tiny.yaml").read_text())
    raw["results_dir"] = str(tmp / "results")
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, raw


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, repo_module, env_module):
    runs = []
    for name in ("first", "second"):
        tmp = tmp_path_factory.mktemp(name)
        path, raw = study_copy(repo_module, tmp, "study")
        run_study(repo_module, env_module, path)
        runs.append((path, raw, tmp / "results" / raw["study"]))
    return runs


@pytest.fixture(scope="module")
def repo_module():
    from conftest import REPO

    return REPO


@pytest.fixture(scope="module")
def env_module():
    import os
    import sys
    from pathlib import Path

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def test_tables_follow_the_contract(two_runs):
    _, raw, out = two_runs[0]
    sources, targets, seeds = raw["sources"], raw["targets"], raw["seeds"]
    transfer = pd.read_parquet(out / "tables/transfer.parquet")
    assert list(transfer.columns) == TRANSFER_COLUMNS
    for method in ("zeroshot", "vanilla", "panda"):
        got = transfer[transfer.method == method]
        pairs = set(zip(got.source, got.target, got.seed))
        assert pairs == {(s, t, k) for s in sources for t in targets for k in seeds}, method
    spot = transfer[transfer.method == "spot_topk"]
    assert set(zip(spot.source, spot.target, spot.seed)) == {("top1", t, k) for t in targets for k in seeds}
    # the plugins' methods went through the DAG and the tables (the figures: test_plugin_methods_reach_every_figure)
    toy = transfer[transfer.method == "toy"]
    assert set(zip(toy.source, toy.target, toy.seed)) == {("mean", t, k) for t in targets for k in seeds}
    assert toy.score.between(0, 100).all() and toy.gain.notna().all()
    rev = transfer[transfer.method == "reversed"]
    assert set(zip(rev.source, rev.target, rev.seed)) == {(s, t, k) for s in sources for t in targets for k in seeds}
    assert rev.steps_to_baseline.isna().all() and rev.relative_performance.notna().all()
    assert transfer.score.between(0, 100).all() and transfer.baseline_score.between(0, 100).all()
    assert (transfer.gain - (transfer.score - transfer.baseline_score)).abs().max() < 1e-9

    similarity = pd.read_parquet(out / "tables/similarity.parquet")
    assert list(similarity.columns) == ["backbone", "source", "target", "metric", "value", "std", "n_pairs"]
    metrics = set(similarity.metric)
    for m in ("cos_avg", "token_cos", "c_con", "e_con", "e_ave", "max", "on", "panda_sim", "early_cos_avg", "on_w0"):
        assert m in metrics, m
        got = similarity[similarity.metric == m]
        assert set(zip(got.source, got.target)) == {(s, t) for s in sources for t in targets}
    assert (similarity.n_pairs == len(seeds) ** 2).all()

    correlation = pd.read_parquet(out / "tables/correlation.parquet")
    assert list(correlation.columns) == CORRELATION_COLUMNS
    assert set(correlation.target) == set(targets) | {"pooled"}
    pooled = correlation[correlation.target == "pooled"]
    assert (pooled[pooled.kind == "metric"].n == len(sources) * len(targets)).all()
    # every analysis predictor has its rows beside the metrics; source_only is defined from 2 targets on, the
    # learned ranking needs 3 (its rows say so with n = 0 rather than going missing)
    assert set(pooled.metric[pooled.kind != "metric"]) == {"source_only", "family_only", "random", "learned"}
    assert (pooled[pooled.metric.isin(["source_only", "random"])].n == len(sources) * len(targets)).all()
    assert (pooled[pooled.metric == "learned"].n == 0).all()
    retrieval = pd.read_parquet(out / "tables/retrieval.parquet")
    assert list(retrieval.columns) == RETRIEVAL_COLUMNS
    curves = pd.read_parquet(out / "tables/curves.parquet")
    base = curves[curves.method == "baseline"]
    assert sorted(base.step.unique().tolist()) == [0, 2, 4]
    for ext in ("png", "pdf"):
        assert (out / f"figures/minilm/gain_heatmap_vanilla.{ext}").stat().st_size > 1000
        assert (out / f"figures/minilm/metric_scatter_vanilla_cos_avg.{ext}").exists()


def test_plugin_methods_reach_every_figure(two_runs):
    """Every figure kind the study draws exists for every variant; the plugins' methods are in each figure that
    shows their kind of method: the trained mixture (toy) like spot_topk, the relative one (reversed) like zeroshot.
    """
    import matplotlib.pyplot as plt

    from promptgrid.figures.learning_curves import learning_curves
    from promptgrid.figures.method_bars import method_bars
    from promptgrid.pipeline.plugins import load_config_with_plugins
    from promptgrid.registry import FIGURES

    path, raw, out = two_runs[0]
    cfg = load_config_with_plugins(path)
    drawn = {}
    for spec in FIGURES.ordered():
        variants = spec.variants(cfg)
        if spec.name != "cross_model":
            assert variants, f"{spec.name}: the tiny study draws every figure kind"
        for v in variants:
            for ext in ("png", "pdf"):
                f = out / f"figures/minilm/{spec.name}{'' if v is None else '_' + str(v)}.{ext}"
                assert f.stat().st_size > 1000, f
        drawn[spec.name] = variants
    assert "toy" in drawn["gain_heatmap"] and "reversed" in drawn["gain_heatmap"]
    assert drawn["relative_performance"] == ["zeroshot", "reversed"]
    for kind in ("metric_scatter",):
        assert any(v.startswith("reversed_") for v in drawn[kind]) and not any(v.startswith("toy_") for v in drawn[kind])
    for kind in ("correlation_bars", "topk_curves"):
        assert "reversed" in drawn[kind] and "toy" not in drawn[kind] and "spot_topk" not in drawn[kind]
    # the figures that gather methods: toy gets one bar / line per mixture row, as spot_topk; reversed no bar
    transfer = pd.read_parquet(out / "tables/transfer.parquet")
    bars = method_bars(transfer, None, "minilm")
    labels = {t.get_text() for t in bars.axes[0].get_legend().get_texts()}
    assert {"toy (mean)", "spot_topk (top1)", "vanilla", "panda"} <= labels and "reversed" not in labels
    curves = learning_curves(pd.read_parquet(out / "tables/curves.parquet"), "minilm", raw["targets"][0])
    lines = {t.get_text() for t in curves.axes[0].get_legend().get_texts()}
    assert "toy (mean)" in lines and "spot_topk (top1)" in lines
    plt.close("all")


def test_outputs_record_provenance(two_runs):
    _, raw, out = two_runs[0]
    meta = read_table_meta(out / "tables/transfer.parquet")
    for key in ("config_hash", "seed", "promptgrid_version", "git_commit", "packages", "config"):
        assert key in meta, key
    assert meta["config"]["study"] == raw["study"] and meta["packages"]["torch"].startswith("2.")
    _, pmeta = load_prompt(out / "prompts/minilm/task/hotels/seed1.safetensors")
    assert pmeta["seed"] == 1 and pmeta["task"] == "hotels" and pmeta["backbone_revision"].startswith("pypi:")
    assert len(pmeta["config_hash"]) == 16 and "git_commit" in pmeta and "step" in pmeta


def test_every_model_job_leaves_a_benchmark(two_runs, repo_module):
    """One Snakemake benchmark per model job (README: sizing mem_mb and runtime), at the path layout gives it;
    no other rule writes one."""
    from promptgrid.config import StudyConfig
    from promptgrid.pipeline.plugins import load

    _, raw, out = two_runs[0]
    load(raw, base=repo_module)  # the study's plugin methods, named relative to the checkout
    counts = expected_counts(StudyConfig.from_dict(raw))
    model_rules = {"train_prompt", "evaluate", "transfer", "model_similarity", "model_similarity_target"}
    found = {rule.name: sorted(rule.rglob("*.tsv")) for rule in (out / "benchmarks").iterdir()}
    assert {rule: len(files) for rule, files in found.items()} == {r: counts[r] for r in model_rules if counts.get(r)}
    assert found["train_prompt"][0] == out / layout.benchmark("train_prompt", "minilm", "hotels")
    for files in found.values():
        header, row = files[0].read_text().splitlines()[:2]
        assert header.split("\t")[:3] == ["s", "h:m:s", "max_rss"] and float(row.split("\t")[0]) > 0


def _content_hash(path):
    df = pd.read_parquet(path)
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()


def test_same_config_and_seed_give_identical_tables(two_runs):
    (_, _, a), (_, _, b) = two_runs
    for table in ("transfer", "similarity", "curves", "correlation", "retrieval"):
        assert _content_hash(a / f"tables/{table}.parquet") == _content_hash(b / f"tables/{table}.parquet"), table
    pa, _ = load_prompt(a / "prompts/minilm/vanilla/medicine/hotels/seed0.safetensors")
    pb, _ = load_prompt(b / "prompts/minilm/vanilla/medicine/hotels/seed0.safetensors")
    assert pa.equal(pb)


@pytest.mark.parametrize("section, value, expected", [
    ("analysis", {"bootstrap": 60}, {"correlate", "fig_correlation_bars", "fig_topk_curves", "all"}),
    ("metrics", {"panda_examples": 6},
     {"model_similarity_target", "transfer", "collect", "correlate", "all"}),
])
def test_config_change_reruns_exactly_the_affected_jobs(two_runs, repo_module, env_module, section, value, expected):
    path, raw, _ = two_runs[1]
    changed = json.loads(json.dumps(raw))
    changed[section].update(value)
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        counts = job_counts(run_study(repo_module, env_module, path, dry=True))
    finally:
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ran = {rule for rule in counts if rule != "total"}
    assert expected <= ran
    # nothing upstream of the change reruns
    assert not ran & {"prepare_task", "train_prompt", "evaluate", "prompt_similarity", "model_similarity"}
    if section == "analysis":
        assert ran == expected


def test_report_is_self_contained_html(two_runs, repo_module, env_module, tmp_path):
    path, _, out = two_runs[0]
    report = tmp_path / "report.html"
    run_study(repo_module, env_module, path, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000  # figures are embedded, not linked
    for name in ("gain_heatmap_vanilla.png", "correlation_bars_vanilla.png", "topk_curves_vanilla.png",
                 "correlation.html", "summary.html"):
        assert name in html, name


def test_summarize_prints_the_best_metric(two_runs, env_module):
    _, _, out = two_runs[0]
    res = subprocess.run(["promptgrid", "summarize", "--config", str(out / "config.json")], env=env_module,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Outcome: gain (analysis.outcome).")
    summary = pd.read_parquet(out / "tables/summary.parquet")
    assert len(summary) > 0
    for _, row in summary.iterrows():  # one paragraph per backbone and method, naming its best metric
        assert f"On {row['backbone']}, {row['best_metric']} ranks first among {int(row['n_metrics'])} metrics" in res.stdout
    assert "within-target Spearman" in res.stdout and ("not significant" in res.stdout or "significant" in res.stdout)


def test_prompt_bank_exported_for_peft(two_runs):
    from promptgrid.models.peft_io import import_peft

    _, raw, out = two_runs[0]
    for task in ("hotels", "medicine"):
        for seed in raw["seeds"]:
            adapter = out / f"peft/minilm/{task}/seed{seed}"
            assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
            prompt, meta = import_peft(adapter, expect_dim=384)
            original, _ = load_prompt(out / f"prompts/minilm/task/{task}/seed{seed}.safetensors")
            assert prompt.equal(original) and meta["task"] == task


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory, repo_module, env_module):
    """The tiny study once more with deep prompts (P-tuning v2): every stage, method, metric and export."""
    tmp = tmp_path_factory.mktemp("deep")
    path, raw = study_copy(repo_module, tmp, "deep")
    raw["prompt"] = {"length": 4, "kind": "deep", "init": "random", "random_std": 1.0}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_study(repo_module, env_module, path)
    return raw, tmp / "results" / raw["study"]


def test_a_deep_prompt_study_runs_every_stage(deep_run):
    from promptgrid.models.peft_io import import_peft

    raw, out = deep_run
    width = 6 * 2 * 384  # MiniLM: 6 layers, a key and a value of 384 per layer and prefix position
    prompt, meta = load_prompt(out / "prompts/minilm/task/hotels/seed0.safetensors")
    assert prompt.shape == (4, width) and meta["prompt_kind"] == "deep"
    vanilla, vmeta = load_prompt(out / "prompts/minilm/vanilla/medicine/hotels/seed0.safetensors")
    assert vanilla.shape == (4, width) and vmeta["prompt_kind"] == "deep"
    transfer = pd.read_parquet(out / "tables/transfer.parquet")
    for method in raw["transfer"]["methods"]:
        assert (transfer.method == method).any(), method
    assert transfer.score.between(0, 100).all()
    similarity = pd.read_parquet(out / "tables/similarity.parquet")
    assert {"cos_avg", "on", "panda_sim", "max"} <= set(similarity.metric)
    assert similarity.value.notna().all()
    adapter = out / "peft/minilm/hotels/seed0"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    imported, _ = import_peft(adapter, expect_dim=width, kind="deep", n_layers=6)
    assert imported.equal(prompt)
