# Cross-model transfer (Su et al.), for a study with a cross_model section: project source backbone A's prompts
# into target backbone B. One job per registered projector (promptgrid.registry.PROJECTORS) x fit fits it on the
# prompts of the tasks that are not held out and evaluates it on every held-out task (zero-shot and as an
# initial prompt). The collect job gathers the parts into tables/cross_model; the figure kind cross_model draws it.

if CFG.cross_model is not None:

    rule cross_model:
        input:
            lambda w: W.cross_model_inputs(w.fit),
        output:
            [R(p) for p in layout.cross_job_outputs(CFG, "{projector}", "{fit}")],
        log:
            R(layout.log("crossmodel", "{projector}_{fit}")),
        benchmark:
            R(layout.benchmark("cross_model", "{projector}_{fit}"))
        wildcard_constraints:
            projector=W.alternatives(W.projectors()),
            fit=W.alternatives(W.fits()),
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
            "PROMPTGRID_THREADS={threads} promptgrid project --config {params.config:q} "
            "--projector {wildcards.projector:q} --fit {wildcards.fit:q} > {log:q} 2>&1"
