"""The table verbs: gather the parts into the study's tables, run the statistics, summarise.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Mapping, Optional

import pandas as pd

from promptgrid.pipeline.context import Study
from promptgrid.pipeline.similarity import SIMILARITY_COLUMNS
from promptgrid.registry import METHODS
from promptgrid.storage import layout
from promptgrid.storage.files import atomic_path, atomic_write_bytes, read_table, read_table_meta, write_table
from promptgrid.storage.hardware import unusable_gpu_summary, unusable_gpu_warning
from promptgrid.storage.provenance import merge_compute


# ---------------------------------------------------------------- tables
def _read_all(study: Study, rels, metas: Optional[list] = None) -> pd.DataFrame:
    """The parts that exist, concatenated; their provenance is appended to ``metas`` when given."""
    paths = [study.path(r) for r in rels if study.path(r).exists()]
    if metas is not None:
        metas += [read_table_meta(p) for p in paths]
    frames = [read_table(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collect(study: Study) -> None:
    """Gather every part into tables/transfer, similarity, curves and gains (and cross_model, for a study with a
    ``cross_model`` section)."""
    from promptgrid.analysis.gains import aggregate_gains, compute_gains

    cfg = study.cfg
    baselines, runs, curves, sims, parts = [], [], [], [], []
    for b in cfg.backbones:
        baselines.append(_read_all(study, [layout.train_runs(b, t) for t in cfg.trained_tasks], parts))
        curves.append(_read_all(study, [layout.train_curves(b, t) for t in cfg.targets]))
        for m in cfg.transfer.methods:
            runs.append(_read_all(study, [layout.method_runs(b, m, t) for t in cfg.targets], parts))
            if METHODS[m].trains:
                curves.append(_read_all(study, [layout.method_curves(b, m, t) for t in cfg.targets]))
        sims.append(_read_all(study, layout.similarity_parts(cfg, b), parts))
    baselines = pd.concat(baselines, ignore_index=True)
    curves = pd.concat(curves, ignore_index=True)
    runs = pd.concat([r for r in runs if len(r)], ignore_index=True)
    similarity = pd.concat([s for s in sims if len(s)], ignore_index=True) if any(len(s) for s in sims) \
        else pd.DataFrame(columns=SIMILARITY_COLUMNS)
    early = cfg.analysis.early_step if cfg.analysis.early_step is not None else cfg.training.early_step
    transfer = compute_gains(runs, baselines, curves, early_step=early)
    # the parts' machines: how many model jobs computed on the CPU beside a GPU torch could not use
    gpu_unusable = unusable_gpu_summary(parts)
    meta = study.meta(study.stage_hash("collect"), seed=cfg.seeds, compute=merge_compute(parts),
                      gpu_unusable=gpu_unusable)
    write_table(transfer, study.path(layout.table("transfer")), meta)
    write_table(similarity[SIMILARITY_COLUMNS], study.path(layout.table("similarity")), meta)
    write_table(curves, study.path(layout.table("curves")), meta)
    write_table(aggregate_gains(transfer), study.path(layout.table("gains")), meta)
    print(f"[collect] transfer {len(transfer)} rows, similarity {len(similarity)} rows, curves {len(curves)} rows",
          flush=True)
    if unusable_gpu_warning(gpu_unusable):
        print(f"[collect] {unusable_gpu_warning(gpu_unusable)}", flush=True)
    if cfg.cross_model is not None:  # the cross-model jobs' parts, into tables/cross_model
        from promptgrid.pipeline.crossmodel import gather

        gather(study)


def correlate(study: Study) -> None:
    from promptgrid.analysis.correlation import correlation_table, metric_comparison_table, predictor_rows
    from promptgrid.analysis.findings import findings_table
    from promptgrid.analysis.pooled import permutations_needed
    from promptgrid.analysis.retrieval import retrieval_table
    from promptgrid.analysis.summary import summary_table
    from promptgrid.registry import PREDICTORS

    cfg = study.cfg
    a = cfg.analysis
    transfer = read_table(study.path(layout.table("transfer")))
    similarity = read_table(study.path(layout.table("similarity")))
    t0 = time.time()
    families = {name: t.family for name, t in cfg.tasks.items()}
    predictors = predictor_rows(similarity, transfer, families, a.outcome, a.seed, names=a.predictors)
    m = similarity["metric"].nunique() + len(a.predictors)
    if a.permutations is not None and a.permutations < permutations_needed(m):
        print(f"[correlate] WARNING: analysis.permutations = {a.permutations} is below the {permutations_needed(m)} "
              f"that {m} metrics and predictors need (20 m / 0.05): an adjusted p may sit on the permutation grid; "
              f"unset it to size it automatically", flush=True)
    correlation = correlation_table(similarity, transfer, a.permutations, a.bootstrap, a.seed, outcome=a.outcome,
                                    predictors=predictors)
    comparison = metric_comparison_table(similarity, transfer, seed=a.seed, outcome=a.outcome, predictors=predictors)
    retrieval = retrieval_table(similarity, transfer, a.top_k, predictors=predictors, outcome=a.outcome)
    summary = summary_table(correlation, retrieval, comparison)
    kinds = [(name, PREDICTORS[name].kind) for name in a.predictors]
    findings = findings_table(transfer, summary, families, a.outcome, retrieval, kinds)
    # the statistics ran here, on the numbers the model jobs computed: their record travels on
    transfer_meta = read_table_meta(study.path(layout.table("transfer")))
    meta = study.meta(study.stage_hash("correlate"), seed=a.seed, compute=transfer_meta.get("compute") or {},
                      gpu_unusable=transfer_meta.get("gpu_unusable"))
    tables = {"correlation": correlation, "metric_comparison": comparison, "retrieval": retrieval,
              "summary": summary, "findings": findings}
    for name, df in tables.items():
        write_table(df, study.path(layout.table(name)), meta)
    write_report_tables(study.root, tables)
    print(f"[correlate] {len(correlation)} correlations, {len(comparison)} comparisons, {len(retrieval)} retrieval "
          f"rows in {time.time() - t0:.1f}s", flush=True)
    print(summary_text_for(summary), flush=True)
    print(findings_text(findings), flush=True)


def findings_text(findings: pd.DataFrame) -> str:
    from promptgrid.analysis.findings import findings_text as text

    return text(findings)


# ---------------------------------------------------------------- the report's tables
#: title and one-line description of each table in layout.CSV_TABLES, at the top of its HTML page
REPORT_TABLES = {
    "findings": ("Findings",
                 "The study's answers, each with a 95 % CI that treats the target as the unit; positive_targets of "
                 "n_targets says on how many targets it holds; detail says what the value is."),
    "correlation": ("Correlation of each similarity metric with transfer",
                    "Pearson r, Spearman ρ and Kendall τ of each metric with the transfer outcome, per backbone, "
                    "method and target: per target over its sources (permutation p, bootstrap CI over sources); "
                    "pooled, within targets (p from permuting sources within targets, CI from resampling targets)."),
    "retrieval": ("Source retrieval by each similarity metric",
                  "Gain (score points) of the best of the k top-ranked sources against the oracle and random "
                  "choice, with regret and nDCG@k, per backbone, metric, method, target and k."),
    "summary": ("Which similarity metric predicts transfer best",
                "Per backbone and method: the best metric, its pooled within-target Spearman ρ with 95 % CI and "
                "Holm-adjusted p, the runner-up and whether the best beats it, and the retrieval quality of the "
                "best metric."),
}
_TABLE_CSS = ("body{font-family:sans-serif;font-size:14px;color:#222;margin:12px}"
              "h1{font-size:18px;margin:0 0 6px}p{max-width:60em;line-height:1.4}"
              ".scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px}"
              "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}"
              "th{background:#eee;position:sticky;top:0}tbody tr:nth-child(even){background:#f7f7f7}")


def table_html(name: str, df: pd.DataFrame, intro: str = "") -> str:
    """A self-contained HTML page of one report table (no external resources): its title, its one-line
    description, ``intro`` (plain text, e.g. the summary paragraph) and the table, floats to 3 significant
    digits. Snakemake's report shows it in the page; the CSV beside it is the machine-readable copy."""
    title, description = REPORT_TABLES.get(name, (name, ""))
    body = df.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a", border=0, justify="center")
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in intro.splitlines() if line.strip())
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>'
            f"\n<style>{_TABLE_CSS}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p><em>{html.escape(description)}</em></p>\n{paragraphs}\n<div class="scroll">\n{body}\n</div>\n'
            "</body>\n</html>\n")


def write_report_tables(root, tables: Mapping[str, pd.DataFrame]) -> None:
    """Each table of layout.CSV_TABLES under the study folder ``root``, atomically: as CSV (to download) and
    as an HTML page (what the report shows); the summary's page starts with its plain-English paragraph."""
    for name in layout.CSV_TABLES:
        df = tables[name]
        with atomic_path(Path(root) / layout.table(name, "csv")) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4g")
        intro = summary_text_for(df) if name == "summary" and len(df) else ""
        atomic_write_bytes(Path(root) / layout.table(name, "html"), table_html(name, df, intro).encode("utf-8"))


def summary_text_for(summary: pd.DataFrame) -> str:
    from promptgrid.analysis.summary import summary_text

    return summary_text(summary)


def summarize(study: Study) -> str:
    """The findings table, the summary paragraph, then how the study computed (precision, hardware, torch),
    and last a warning when model jobs computed on the CPU beside a GPU torch could not use."""
    from promptgrid.storage.provenance import compute_line

    path = study.path(layout.table("summary"))
    meta = read_table_meta(path)
    findings = findings_text(read_table(study.path(layout.table("findings"))))
    outcome = f"Outcome: {study.cfg.analysis.outcome} (analysis.outcome)."
    warning = unusable_gpu_warning(meta.get("gpu_unusable"))
    return "\n\n".join([outcome, findings, summary_text_for(read_table(path)), compute_line(meta.get("compute") or {})]
                       + ([warning] if warning else []))
