if CFG.jobs.per_backbone:

    rule train_backbone:
        """Every task's own prompt on one backbone, in one job: the model is loaded once (jobs.per_backbone)."""
        input:
            lambda w: [f for t in W.tasks for f in W.train_inputs(w.backbone, t)],
        output:
            prompts=W.prompt_outputs("{backbone}"),
            early=W.prompt_outputs("{backbone}", early=True),
            runs=[R(layout.train_runs("{backbone}", t)) for t in W.tasks],
            curves=[R(layout.train_curves("{backbone}", t)) for t in W.tasks],
        log:
            R(layout.log("train", "{backbone}")),
        benchmark:
            R(layout.benchmark("train_backbone", "{backbone}"))
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60 + 60 * len(W.tasks),
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: [W.hash("train", task=t, backbone=w.backbone) for t in W.tasks],
            tasks=" ".join(W.tasks),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid train --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --task {params.tasks} > {log:q} 2>&1"

else:

    rule train_prompt:
        input:
            lambda w: W.train_inputs(w.backbone, w.task),
        output:
            prompts=W.prompt_outputs("{backbone}", "{task}"),
            early=W.prompt_outputs("{backbone}", "{task}", early=True),
            runs=R(layout.train_runs("{backbone}", "{task}")),
            curves=R(layout.train_curves("{backbone}", "{task}")),
        log:
            R(layout.log("train", "{backbone}", "{task}")),
        benchmark:
            R(layout.benchmark("train_prompt", "{backbone}", "{task}"))
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=4000,
            runtime=120,
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: W.hash("train", task=w.task, backbone=w.backbone),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid train --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --task {wildcards.task:q} > {log:q} 2>&1"
