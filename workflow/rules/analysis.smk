rule collect:
    input:
        collect_inputs(),
    output:
        transfer=R("tables/transfer.parquet"),
        similarity=R("tables/similarity.parquet"),
        curves=R("tables/curves.parquet"),
        gains=R("tables/gains.parquet"),
    params:
        config=CONFIG_JSON,
    log:
        R("logs/analysis/collect.log"),
    conda:
        ENV
    shell:
        "promptgrid collect --config {params.config:q} > {log:q} 2>&1"


rule correlate:
    input:
        transfer=R("tables/transfer.parquet"),
        similarity=R("tables/similarity.parquet"),
    output:
        correlation=R("tables/correlation.parquet"),
        retrieval=R("tables/retrieval.parquet"),
        comparison=R("tables/metric_comparison.parquet"),
        summary=R("tables/summary.parquet"),
        correlation_csv=report(R("tables/correlation.csv"), caption="../report/correlation_table.rst",
                               category="Tables"),
        retrieval_csv=report(R("tables/retrieval.csv"), caption="../report/retrieval_table.rst",
                             category="Tables"),
        summary_csv=report(R("tables/summary.csv"), caption="../report/summary_table.rst", category="Tables"),
    params:
        config=CONFIG_JSON,
        cfg_hash=stage_hash("analysis"),
    log:
        R("logs/analysis/correlate.log"),
    conda:
        ENV
    shell:
        "promptgrid correlate --config {params.config:q} > {log:q} 2>&1"
