"""The report's tables: the correlate verb writes each of layout.CSV_TABLES as CSV and as an HTML page that
Snakemake's report shows in the page (text/html, in an iframe) instead of offering a download."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from promptgrid.analysis.summary import summary_text
from promptgrid.pipeline.tables import write_report_tables
from promptgrid.storage import layout


def _tables() -> dict:
    correlation = pd.DataFrame([
        dict(backbone="minilm", metric=m, method="vanilla", target=t, n=6, spearman_rho=rho, spearman_p=0.0123456,
             spearman_ci_low=rho - 0.3, spearman_ci_high=np.nan if t == "pooled" else rho + 0.2)
        for m, rho in (("cos_avg", 0.61234), ("max", -0.2)) for t in ("medicine_text", "pooled")])
    retrieval = pd.DataFrame([dict(backbone="minilm", metric="cos_avg", method="vanilla", target="medicine_text",
                                   k=k, best_of_topk=3.14159 + k, oracle=6.0, random=0.5 * k, baseline=0.0,
                                   ndcg=0.8, regret=2.85841 - k) for k in (1, 3)])
    summary = pd.DataFrame([dict(backbone="minilm", method="vanilla", best_metric="cos_avg", n=18, n_targets=3,
                                 n_metrics=2, spearman_p_holm=0.0246912, targets_positive=2, spearman_rho=0.61234, spearman_ci_low=0.31234, spearman_ci_high=0.81234,
                                 spearman_p=0.0123456, runner_up="max", runner_up_rho=-0.2, margin=0.81234,
                                 diff_ci_low=0.1, diff_ci_high=1.2, diff_p=0.004, significant=True,
                                 oracle=6.0, best_of_top1=4.14159, regret_at_1=1.85841, ndcg_at_1=0.8)])
    findings = pd.DataFrame([dict(backbone="minilm", finding="same_vs_other_family", method="vanilla", value=4.56789,
                                  ci_low=1.2, ci_high=7.9, p=np.nan, n=6, n_targets=3, positive_targets=3,
                                  detail="same-family minus other-family sources")])
    return {"correlation": correlation, "retrieval": retrieval, "summary": summary, "findings": findings}


def test_report_tables_are_written_as_csv_and_self_contained_html(tmp_path):
    tables = _tables()
    write_report_tables(tmp_path, tables)
    for name in layout.CSV_TABLES:
        csv = tmp_path / layout.table(name, "csv")
        page = tmp_path / layout.table(name, "html")
        assert csv.exists() and page.exists(), name
        assert list(pd.read_csv(csv).columns) == list(tables[name].columns)
        text = page.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and "<title>" in text and "<h1>" in text
        assert text.count("<table") == 1 and "</table>" in text
        for col in tables[name].columns:
            assert f"<th>{col}</th>" in text, (name, col)
        # self-contained: no links, scripts, stylesheets or images fetched from anywhere
        assert not re.search(r"https?://|<script|<link|<img|src=", text, re.I), name
        assert not [p for p in page.parent.iterdir() if p.name.endswith(".tmp")], "temporary file left behind"
    corr = (tmp_path / layout.table("correlation", "html")).read_text(encoding="utf-8")
    assert "<td>0.612</td>" in corr and "<td>0.0123</td>" in corr  # 3 significant digits
    assert "<td>cos_avg</td>" in corr and "<td>medicine_text</td>" in corr and "n/a" in corr  # NaN CI
    assert "<td>4.14</td>" in (tmp_path / layout.table("retrieval", "html")).read_text(encoding="utf-8")
    # the summary page opens with the plain-English paragraph, above its table
    page = (tmp_path / layout.table("summary", "html")).read_text(encoding="utf-8")
    first = summary_text(tables["summary"]).splitlines()[0]
    assert "cos_avg ranks first among 2 metrics for vanilla gains" in first
    assert "<td>4.57</td>" in (tmp_path / layout.table("findings", "html")).read_text(encoding="utf-8")
    assert page.index(first[:60]) < page.index("<table")
    # writing again gives the same bytes (Snakemake reruns, reproducible results)
    before = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}
    write_report_tables(tmp_path, tables)
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}


def test_report_table_values_are_escaped(tmp_path):
    from promptgrid.pipeline.tables import table_html

    page = table_html("correlation", pd.DataFrame({"metric": ["<b>x</b>"], "value": [1.23456]}),
                      intro="a < b & c")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "a &lt; b &amp; c" in page and "<td>1.23</td>" in page
