# One rule per figure kind. A job draws every variant of its kind for one backbone (one model
# load of seaborn per kind, not per panel); each variant is a PNG and a PDF.

rule fig_gain_heatmap:
    input:
        transfer=R("tables/transfer.parquet"),
    output:
        png=[report(p, caption="../report/gain_heatmap.rst", category="Gains", subcategory="{backbone}")
             for p in expand(R("figures/{{backbone}}/gain_heatmap_{v}.png"), v=METHODS)],
        pdf=expand(R("figures/{{backbone}}/gain_heatmap_{v}.pdf"), v=METHODS),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/gain_heatmap"),
    log:
        R("logs/figures/{backbone}/gain_heatmap.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind gain_heatmap --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_relative_performance:
    input:
        transfer=R("tables/transfer.parquet"),
    output:
        png=report(R("figures/{backbone}/relative_performance.png"), caption="../report/relative_performance.rst", category="Zero-shot transfer",
                   subcategory="{backbone}"),
        pdf=R("figures/{backbone}/relative_performance.pdf"),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/relative_performance"),
    log:
        R("logs/figures/{backbone}/relative_performance.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind relative_performance --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_similarity_heatmap:
    input:
        similarity=R("tables/similarity.parquet"),
    output:
        png=[report(p, caption="../report/similarity_heatmap.rst", category="Similarity", subcategory="{backbone}")
             for p in expand(R("figures/{{backbone}}/similarity_heatmap_{v}.png"), v=ALL_METRIC_NAMES)],
        pdf=expand(R("figures/{{backbone}}/similarity_heatmap_{v}.pdf"), v=ALL_METRIC_NAMES),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/similarity_heatmap"),
    log:
        R("logs/figures/{backbone}/similarity_heatmap.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind similarity_heatmap --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_metric_scatter:
    input:
        transfer=R("tables/transfer.parquet"),
        similarity=R("tables/similarity.parquet"),
    output:
        png=[report(p, caption="../report/metric_scatter.rst", category="Metrics vs gains", subcategory="{backbone}")
             for p in expand(R("figures/{{backbone}}/metric_scatter_{v}.png"), v=METHODS)],
        pdf=expand(R("figures/{{backbone}}/metric_scatter_{v}.pdf"), v=METHODS),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/metric_scatter"),
    log:
        R("logs/figures/{backbone}/metric_scatter.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind metric_scatter --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_correlation_bars:
    input:
        correlation=R("tables/correlation.parquet"),
    output:
        png=[report(p, caption="../report/correlation_bars.rst", category="Metrics vs gains", subcategory="{backbone}")
             for p in expand(R("figures/{{backbone}}/correlation_bars_{v}.png"), v=METHODS)],
        pdf=expand(R("figures/{{backbone}}/correlation_bars_{v}.pdf"), v=METHODS),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/correlation_bars"),
    log:
        R("logs/figures/{backbone}/correlation_bars.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind correlation_bars --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_topk_curves:
    input:
        retrieval=R("tables/retrieval.parquet"),
    output:
        png=[report(p, caption="../report/topk_curves.rst", category="Retrieval", subcategory="{backbone}")
             for p in expand(R("figures/{{backbone}}/topk_curves_{v}.png"), v=METHODS)],
        pdf=expand(R("figures/{{backbone}}/topk_curves_{v}.pdf"), v=METHODS),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/topk_curves"),
    log:
        R("logs/figures/{backbone}/topk_curves.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind topk_curves --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_learning_curves:
    input:
        curves=R("tables/curves.parquet"),
    output:
        png=[report(p, caption="../report/learning_curves.rst", category="Learning curves", subcategory="{backbone}")
             for p in expand(R("figures/{{backbone}}/learning_curves_{v}.png"), v=CFG.targets)],
        pdf=expand(R("figures/{{backbone}}/learning_curves_{v}.pdf"), v=CFG.targets),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/learning_curves"),
    log:
        R("logs/figures/{backbone}/learning_curves.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind learning_curves --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule fig_method_bars:
    input:
        transfer=R("tables/transfer.parquet"),
    output:
        png=report(R("figures/{backbone}/method_bars.png"), caption="../report/method_bars.rst", category="Gains",
                   subcategory="{backbone}"),
        pdf=R("figures/{backbone}/method_bars.pdf"),
    params:
        config=CONFIG_JSON,
        out=lambda w: R(f"figures/{w.backbone}/method_bars"),
    log:
        R("logs/figures/{backbone}/method_bars.log"),
    conda:
        ENV
    shell:
        "promptgrid figure --config {params.config:q} --kind method_bars --backbone {wildcards.backbone:q} "
        "--out {params.out:q} > {log:q} 2>&1"
