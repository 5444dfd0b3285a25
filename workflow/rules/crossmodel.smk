# Cross-model transfer (Su et al.): project source backbone A's prompts into target backbone B.
# One job per (projector, objective) trains the projector on the non-held-out tasks' prompts and
# evaluates it on every held-out task (zero-shot and as initialisation); then one table and one figure.
# Paths come from promptgrid.jobs_crossmodel, which the verbs use too.

if CROSS is not None:
    rule cross_model:
        input:
            cross_model_inputs,
        output:
            part=R(XM.part(CFG, "{projector}", "{objective}")),
            curves=R(XM.curves_part(CFG, "{projector}", "{objective}")),
            projector=R(XM.projector_file(CFG, "{projector}", "{objective}")),
            prompts=[R(XM.projected_prompt(CFG, "{projector}", "{objective}", m, t, s))
                     for m in XM.MODES for t in CROSS.held_out for s in SEEDS],
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: stage_hash("prompt", "training", "seeds", "cross_model",
                                          f"backbones.{CROSS.source_backbone}",
                                          f"backbones.{CROSS.target_backbone}",
                                          *[f"tasks.{t}" for t in XM_TRAIN_TASKS + list(CROSS.held_out)]),
        wildcard_constraints:
            projector="|".join(CROSS.projectors),
            objective="|".join(CROSS.objectives),
        threads: 2
        resources:
            mem_mb=6000,
            runtime=240,
        log:
            R("logs/crossmodel/{projector}_{objective}.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid cross-model --config {params.config:q} "
            "--projector {wildcards.projector:q} --objective {wildcards.objective:q} > {log:q} 2>&1"

    rule cross_model_table:
        input:
            [R(XM.part(CFG, p, o)) for p in CROSS.projectors for o in CROSS.objectives],
        output:
            R(XM.table_file()),
        params:
            config=CONFIG_JSON,
            cfg_hash=stage_hash("cross_model"),
        log:
            R("logs/crossmodel/table.log"),
        conda:
            ENV
        shell:
            "promptgrid cross-model-table --config {params.config:q} > {log:q} 2>&1"

    rule fig_cross_model:
        input:
            R(XM.table_file()),
        output:
            png=report(R(layout.figure("cross_model", "png")), category="Cross-model transfer"),
            pdf=R(layout.figure("cross_model", "pdf")),
        params:
            config=CONFIG_JSON,
            out=lambda w, output: output.png[: -len(".png")],
        log:
            R("logs/figures/cross_model.log"),
        conda:
            ENV
        shell:
            "promptgrid cross-model-figure --config {params.config:q} --out {params.out:q} > {log:q} 2>&1"
