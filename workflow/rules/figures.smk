# One rule per registered figure kind (promptgrid.registry.FIGURES): a job draws every variant of its kind
# for one backbone (one start-up of Python and seaborn per kind, not per panel). Each PNG goes into the
# report with its own caption (written at DAG build from the kind's text) and labels.

for kind in W.figure_kinds():

    rule:
        name:
            f"fig_{kind}"
        input:
            W.figure_inputs(kind),
        output:
            png=[
                report(png, caption=caption, category=W.figure_category(kind), subcategory="{backbone}", labels=labels)
                for png, caption, labels in W.report_entries(kind)
            ],
            pdf=W.figure_outputs(kind, "pdf"),
        log:
            R(layout.log("figures", "{backbone}", kind)),
        conda:
            ENV
        params:
            config=CONFIG_JSON,
            kind=kind,
        shell:
            "promptgrid figure --config {params.config:q} --kind {params.kind:q} --backbone {wildcards.backbone:q} "
            "> {log:q} 2>&1"
