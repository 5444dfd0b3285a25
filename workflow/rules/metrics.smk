rule prompt_metrics:
    input:
        lambda w: all_task_prompts(w.backbone) + all_task_prompts(w.backbone, early=True),
    output:
        R("parts/{backbone}/similarity/prompt.parquet"),
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: stage_hash("sources", "targets", "metrics.names", backbone=w.backbone),
    log:
        R("logs/metrics/{backbone}/prompt.log"),
    conda:
        ENV
    shell:
        "PROMPTGRID_THREADS={threads} promptgrid prompt-metrics --config {params.config:q} "
        "--backbone {wildcards.backbone:q} > {log:q} 2>&1"


rule on_metric:
    input:
        lambda w: all_task_prompts(w.backbone) + all_task_prompts(w.backbone, early=True),
    output:
        R("parts/{backbone}/similarity/on.parquet"),
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: stage_hash("sources", "targets", "metrics.names", "metrics.on_window",
                                      backbone=w.backbone),
    threads: 2
    log:
        R("logs/metrics/{backbone}/on.log"),
    conda:
        ENV
    shell:
        "PROMPTGRID_THREADS={threads} promptgrid on-metric --config {params.config:q} "
        "--backbone {wildcards.backbone:q} > {log:q} 2>&1"


if CFG.jobs.per_backbone:

    rule panda_metric_backbone:
        """PANDA metric for every (source, target) pair of one backbone, in one job (jobs.per_backbone)."""
        input:
            lambda w: [f for t in CFG.targets for f in task_data(t)] + all_task_prompts(w.backbone),
        output:
            expand(R("parts/{{backbone}}/similarity/panda/{target}.parquet"), target=CFG.targets),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: [stage_hash("sources", "metrics.panda_examples", "training.precision", task=t,
                                           backbone=w.backbone) for t in CFG.targets],
            targets=" ".join(CFG.targets),
        threads: 2
        priority: 2  # every PANDA transfer waits for it
        log:
            R("logs/metrics/{backbone}/panda.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid panda-metric --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --target {params.targets} > {log:q} 2>&1"

else:

    rule panda_metric:
        input:
            lambda w: task_data(w.target) + task_prompts(w.backbone, w.target) + source_prompts(w.backbone),
        output:
            R("parts/{backbone}/similarity/panda/{target}.parquet"),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: stage_hash("sources", "metrics.panda_examples", "training.precision", task=w.target,
                                          backbone=w.backbone),
        threads: 2
        priority: 2  # the PANDA transfer into this target waits for it
        log:
            R("logs/metrics/{backbone}/panda/{target}.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid panda-metric --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --target {wildcards.target:q} > {log:q} 2>&1"
