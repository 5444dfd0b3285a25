# Similarity metrics (promptgrid.registry.SIMILARITIES): every prompt-only metric of a backbone in one job;
# each model-based metric in its own, per backbone or, when it reads the target's inputs, per target
# (with jobs.per_backbone: every target in one job).

if W.has_prompt_metrics():

    rule prompt_similarity:
        input:
            lambda w: W.all_task_prompts(w.backbone) + W.all_task_prompts(w.backbone, early=True),
        output:
            R(layout.prompt_similarity("{backbone}")),
        log:
            R(layout.log("similarity", "{backbone}", "prompt")),
        conda:
            ENV
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: W.hash("prompt_similarity", backbone=w.backbone),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid prompt-similarity --config {params.config:q} "
            "--backbone {wildcards.backbone:q} > {log:q} 2>&1"


rule model_similarity:
    input:
        lambda w: W.all_task_prompts(w.backbone),
    output:
        R(layout.model_similarity("{backbone}", "{metric}")),
    log:
        R(layout.log("similarity", "{backbone}", "{metric}")),
    benchmark:
        R(layout.benchmark("model_similarity", "{backbone}", "{metric}"))
    wildcard_constraints:
        metric=W.alternatives(W.model_metrics(per_target=False)),
    conda:
        ENV
    threads: 2
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: W.hash("model_similarity", backbone=w.backbone, metric=w.metric),
    shell:
        "PROMPTGRID_THREADS={threads} promptgrid model-similarity --config {params.config:q} "
        "--backbone {wildcards.backbone:q} --metric {wildcards.metric:q} > {log:q} 2>&1"


if CFG.jobs.per_backbone:

    rule model_similarity_backbone:
        """A metric that reads each target's inputs, for every target of one backbone in one job."""
        input:
            lambda w: [f for t in CFG.targets for f in W.task_data(t)] + W.all_task_prompts(w.backbone),
        output:
            [R(layout.model_similarity("{backbone}", "{metric}", t)) for t in CFG.targets],
        log:
            R(layout.log("similarity", "{backbone}", "{metric}")),
        benchmark:
            R(layout.benchmark("model_similarity_backbone", "{backbone}", "{metric}"))
        wildcard_constraints:
            metric=W.alternatives(W.model_metrics(per_target=True)),
        priority: 2  # the transfers that weight sources by it wait for it
        conda:
            ENV
        threads: 2
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: W.hash("model_similarity", backbone=w.backbone, metric=w.metric),
            targets=" ".join(CFG.targets),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid model-similarity --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --metric {wildcards.metric:q} --target {params.targets} > {log:q} 2>&1"

else:

    rule model_similarity_target:
        input:
            lambda w: W.task_data(w.target) + W.task_prompts(w.backbone, w.target) + W.source_prompts(w.backbone),
        output:
            R(layout.model_similarity("{backbone}", "{metric}", "{target}")),
        log:
            R(layout.log("similarity", "{backbone}", "{metric}", "{target}")),
        benchmark:
            R(layout.benchmark("model_similarity_target", "{backbone}", "{metric}", "{target}"))
        wildcard_constraints:
            metric=W.alternatives(W.model_metrics(per_target=True)),
        priority: 2  # the transfer into this target that weights sources by it waits for it
        conda:
            ENV
        threads: 2
        params:
            config=CONFIG_JSON,
            cfg_hash=lambda w: W.hash("model_similarity", backbone=w.backbone, metric=w.metric),
        shell:
            "PROMPTGRID_THREADS={threads} promptgrid model-similarity --config {params.config:q} "
            "--backbone {wildcards.backbone:q} --metric {wildcards.metric:q} --target {wildcards.target:q} "
            "> {log:q} 2>&1"
