# Cross-model transfer (Su et al.): project source backbone A's prompts into target backbone B.
# One job per (projector, objective) trains the projector on the non-held-out tasks' prompts and
# evaluates it on every held-out task (zero-shot and as initialisation); then one table and one figure.

if CFG.cross_model is not None:

    rule cross_model:
        input:
            lambda w: W.cross_model_inputs(w.objective),
        output:
            [R(p) for p in layout.cross_job_outputs(CFG, "{projector}", "{objective}")],
        log:
            R(layout.log("crossmodel", "{projector}_{objective}")),
        wildcard_constraints:
            projector=W.alternatives(CFG.cross_model.projectors),
            objective=W.alternatives(CFG.cross_model.objectives),
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=6000,
            runtime=240,
        params:
            config=CONFIG_JSON,
            cfg_hash=W.hash("cross_model"),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid cross-model --config {params.config:q} "
            "--projector {wildcards.projector:q} --objective {wildcards.objective:q} > {log:q} 2>&1"

    rule cross_model_table:
        input:
            [R(layout.cross_part(CFG, p, o)) for p in CFG.cross_model.projectors for o in CFG.cross_model.objectives],
        output:
            R(layout.table(layout.CROSS_TABLE)),
        log:
            R(layout.log("crossmodel", "table")),
        conda:
            ENV
        params:
            config=CONFIG_JSON,
            cfg_hash=W.hash("cross_model"),
        shell:
            "promptgrid cross-model-table --config {params.config:q} > {log:q} 2>&1"

    rule fig_cross_model:
        input:
            R(layout.table(layout.CROSS_TABLE)),
        output:
            png=report(R(layout.cross_figure("png")), category="Cross-model transfer"),
            pdf=R(layout.cross_figure("pdf")),
        log:
            R(layout.log("figures", "cross_model")),
        conda:
            ENV
        params:
            config=CONFIG_JSON,
        shell:
            "promptgrid cross-model-figure --config {params.config:q} > {log:q} 2>&1"
