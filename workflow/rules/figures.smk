# One rule per figure kind. A job draws every variant of its kind for one backbone (one start-up of
# Python and seaborn per kind, not per panel); the variants come from promptgrid.layout.figure_variants.


if layout.figure_variants(CFG, "gain_heatmap"):

    rule fig_gain_heatmap:
        input:
            transfer=R("tables/transfer.parquet"),
        output:
            png=figure_outputs_of("gain_heatmap", "png", caption="../report/gain_heatmap.rst", category="Gains"),
            pdf=figure_outputs_of("gain_heatmap", "pdf"),
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


if layout.figure_variants(CFG, "relative_performance"):

    rule fig_relative_performance:
        input:
            transfer=R("tables/transfer.parquet"),
        output:
            png=figure_outputs_of("relative_performance", "png", caption="../report/relative_performance.rst", category="Zero-shot transfer"),
            pdf=figure_outputs_of("relative_performance", "pdf"),
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


if layout.figure_variants(CFG, "similarity_heatmap"):

    rule fig_similarity_heatmap:
        input:
            similarity=R("tables/similarity.parquet"),
        output:
            png=figure_outputs_of("similarity_heatmap", "png", caption="../report/similarity_heatmap.rst", category="Similarity"),
            pdf=figure_outputs_of("similarity_heatmap", "pdf"),
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


if layout.figure_variants(CFG, "metric_scatter"):

    rule fig_metric_scatter:
        input:
            transfer=R("tables/transfer.parquet"),
            similarity=R("tables/similarity.parquet"),
        output:
            png=figure_outputs_of("metric_scatter", "png", caption="../report/metric_scatter.rst", category="Metrics vs gains"),
            pdf=figure_outputs_of("metric_scatter", "pdf"),
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


if layout.figure_variants(CFG, "correlation_bars"):

    rule fig_correlation_bars:
        input:
            correlation=R("tables/correlation.parquet"),
        output:
            png=figure_outputs_of("correlation_bars", "png", caption="../report/correlation_bars.rst", category="Metrics vs gains"),
            pdf=figure_outputs_of("correlation_bars", "pdf"),
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


if layout.figure_variants(CFG, "topk_curves"):

    rule fig_topk_curves:
        input:
            retrieval=R("tables/retrieval.parquet"),
        output:
            png=figure_outputs_of("topk_curves", "png", caption="../report/topk_curves.rst", category="Retrieval"),
            pdf=figure_outputs_of("topk_curves", "pdf"),
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


if layout.figure_variants(CFG, "learning_curves"):

    rule fig_learning_curves:
        input:
            curves=R("tables/curves.parquet"),
        output:
            png=figure_outputs_of("learning_curves", "png", caption="../report/learning_curves.rst", category="Learning curves"),
            pdf=figure_outputs_of("learning_curves", "pdf"),
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


if layout.figure_variants(CFG, "method_bars"):

    rule fig_method_bars:
        input:
            transfer=R("tables/transfer.parquet"),
        output:
            png=figure_outputs_of("method_bars", "png", caption="../report/method_bars.rst", category="Gains"),
            pdf=figure_outputs_of("method_bars", "pdf"),
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
