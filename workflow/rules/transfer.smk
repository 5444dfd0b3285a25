if CFG.jobs.per_backbone:

    rule zeroshot_backbone:
        """Every source prompt on every target's test split, one job per backbone (jobs.per_backbone)."""
        input:
            lambda w: [f for t in CFG.targets for f in task_data(t)] + source_prompts(w.backbone),
        output:
            expand(R("parts/{{backbone}}/zeroshot/{target}.parquet"), target=CFG.targets),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: [stage_hash("prompt", "training", "seeds", "sources", task=t, backbone=w.backbone)
                                for t in CFG.targets],
            targets=" ".join(CFG.targets),
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30 + 30 * len(CFG.targets),
        log:
            R("logs/zeroshot/{backbone}.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid zeroshot --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --target {params.targets} > {log:q} 2>&1"

else:

    rule zeroshot:
        input:
            lambda w: task_data(w.target) + source_prompts(w.backbone),
        output:
            R("parts/{backbone}/zeroshot/{target}.parquet"),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: stage_hash("prompt", "training", "seeds", "sources", task=w.target, backbone=w.backbone),
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        log:
            R("logs/zeroshot/{backbone}/{target}.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid zeroshot --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --target {wildcards.target:q} > {log:q} 2>&1"


rule transfer:
    input:
        transfer_inputs,
    output:
        runs=R("parts/{backbone}/{method}/{target}.runs.parquet"),
        curves=R("parts/{backbone}/{method}/{target}.curves.parquet"),
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: stage_hash("prompt", "training", "seeds", "sources", *method_sections(w.method),
                                      task=w.target, backbone=w.backbone),
    threads: 2
    # the longest chain is vanilla -> PANDA per target: start transfers before the short metric jobs
    priority: 1
    resources:
        mem_mb=6000,
        runtime=240,
    log:
        R("logs/transfer/{backbone}/{method}/{target}.log"),
    conda:
        ENV
    shell:
        "PROMPTGRID_THREADS={threads} promptgrid transfer --config {params.config:q} --backbone {wildcards.backbone:q} "
        "--target {wildcards.target:q} --method {wildcards.method:q} > {log:q} 2>&1"
