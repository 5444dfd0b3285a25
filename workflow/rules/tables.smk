rule collect:
    input:
        W.collect_inputs(),
    output:
        **W.collect_outputs(),
    log:
        R(layout.log("analysis", "collect")),
    localrule: True
    conda:
        ENV
    params:
        config=CONFIG_JSON,
        cfg_hash=W.hash("collect"),
    shell:
        "promptgrid collect --config {params.config:q} > {log:q} 2>&1"


rule correlate:
    input:
        transfer=R(layout.table("transfer")),
        similarity=R(layout.table("similarity")),
    output:
        **{
            name: R(layout.table(name))
            for name in ("correlation", "retrieval", "metric_comparison", "summary", "findings")
        },
        **{f"{name}_csv": R(layout.table(name, "csv")) for name in layout.CSV_TABLES},
        **{
            f"{name}_html": report(
                R(layout.table(name, "html")),
                caption=f"../report/{name}_table.rst",
                category="Tables",
                labels={"table": name},
            )
            for name in layout.CSV_TABLES
        },
    log:
        R(layout.log("analysis", "correlate")),
    conda:
        ENV
    params:
        config=CONFIG_JSON,
        cfg_hash=W.hash("correlate"),
    shell:
        "promptgrid correlate --config {params.config:q} > {log:q} 2>&1"
