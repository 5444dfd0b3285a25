if CFG.jobs.per_backbone:

    rule train_backbone:
        """Every task's own prompt on one backbone, in one job: the model is loaded once (jobs.per_backbone)."""
        input:
            lambda w: [f for t in TASKS for f in train_inputs(w.backbone, t)],
        output:
            prompts=expand(R("prompts/{{backbone}}/task/{task}/seed{seed}.safetensors"), task=TASKS, seed=SEEDS),
            early=expand(R("prompts/{{backbone}}/task/{task}/seed{seed}.early.safetensors"), task=TASKS, seed=SEEDS),
            runs=expand(R("parts/{{backbone}}/train/{task}.runs.parquet"), task=TASKS),
            curves=expand(R("parts/{{backbone}}/train/{task}.curves.parquet"), task=TASKS),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: [stage_hash("prompt", "training", "seeds", task=t, backbone=w.backbone) for t in TASKS],
            tasks=" ".join(TASKS),
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60 + 60 * len(TASKS),
        log:
            R("logs/train/{backbone}.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid train --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --task {params.tasks} > {log:q} 2>&1"

else:

    rule train_prompt:
        input:
            lambda w: train_inputs(w.backbone, w.task),
        output:
            prompts=expand(R("prompts/{{backbone}}/task/{{task}}/seed{seed}.safetensors"), seed=SEEDS),
            early=expand(R("prompts/{{backbone}}/task/{{task}}/seed{seed}.early.safetensors"), seed=SEEDS),
            runs=R("parts/{backbone}/train/{task}.runs.parquet"),
            curves=R("parts/{backbone}/train/{task}.curves.parquet"),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: stage_hash("prompt", "training", "seeds", task=w.task, backbone=w.backbone),
        threads: 2
        resources:
            mem_mb=4000,
            runtime=120,
        log:
            R("logs/train/{backbone}/{task}.log"),
        conda:
            ENV
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid train --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --task {wildcards.task:q} > {log:q} 2>&1"


rule export_peft:
    """Every task prompt as a PEFT PromptTuning adapter folder (a prompt bank others can load)."""
    input:
        lambda w: all_task_prompts(w.backbone),
    output:
        directory(R("peft/{backbone}")),
    params:
        config=CONFIG_JSON,
    log:
        R("logs/peft/{backbone}.log"),
    conda:
        ENV
    shell:
        "promptgrid export-peft-bank --config {params.config:q} --backbone {wildcards.backbone:q} "
        "--out {output:q} > {log:q} 2>&1"
