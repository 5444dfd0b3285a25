# Transfer methods (promptgrid.registry.METHODS): a trained method is one prompt bank per target; an
# evaluating one (zero-shot) scores the source prompts as they are, per target or, with
# jobs.per_backbone, for every target in one job.


rule transfer:
    input:
        lambda w: W.transfer_inputs(w.backbone, w.method, w.target),
    output:
        runs=R(layout.method_runs("{backbone}", "{method}", "{target}")),
        curves=R(layout.method_curves("{backbone}", "{method}", "{target}")),
    log:
        R(layout.log("transfer", "{backbone}", "{method}", "{target}")),
    benchmark:
        R(layout.benchmark("transfer", "{backbone}", "{method}", "{target}"))
    wildcard_constraints:
        method=W.alternatives(W.methods(trains=True)),
    # the longest chain is vanilla -> PANDA per target: start transfers before the short metric jobs
    priority: 1
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: W.hash("transfer", task=w.target, backbone=w.backbone, method=w.method),
    shell:
        "PROMPTGRID_THREADS={threads} promptgrid transfer --config {params.config:q} --backbone {wildcards.backbone:q} "
        "--target {wildcards.target:q} --method {wildcards.method:q} > {log:q} 2>&1"


if CFG.jobs.per_backbone:

    rule evaluate_backbone:
        """An evaluating method (zero-shot) on every target of one backbone, in one job (jobs.per_backbone)."""
        input:
            lambda w: [f for t in CFG.targets for f in W.transfer_inputs(w.backbone, w.method, t)],
        output:
            [R(layout.method_runs("{backbone}", "{method}", t)) for t in CFG.targets],
        log:
            R(layout.log("transfer", "{backbone}", "{method}")),
        benchmark:
            R(layout.benchmark("evaluate_backbone", "{backbone}", "{method}"))
        wildcard_constraints:
            method=W.alternatives(W.methods(trains=False)),
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30 + 30 * len(CFG.targets),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: [W.hash("transfer", task=t, backbone=w.backbone, method=w.method) for t in CFG.targets],
            targets=" ".join(CFG.targets),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid transfer --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --method {wildcards.method:q} --target {params.targets} > {log:q} 2>&1"

else:

    rule evaluate:
        input:
            lambda w: W.transfer_inputs(w.backbone, w.method, w.target),
        output:
            R(layout.method_runs("{backbone}", "{method}", "{target}")),
        log:
            R(layout.log("transfer", "{backbone}", "{method}", "{target}")),
        benchmark:
            R(layout.benchmark("evaluate", "{backbone}", "{method}", "{target}"))
        wildcard_constraints:
            method=W.alternatives(W.methods(trains=False)),
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: W.hash("transfer", task=w.target, backbone=w.backbone, method=w.method),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid transfer --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --method {wildcards.method:q} --target {wildcards.target:q} "
            "> {log:q} 2>&1"
