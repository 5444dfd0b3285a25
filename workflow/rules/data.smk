rule prepare_task:
    input:
        unpack(lambda w: {"local": CFG.tasks[w.task].path} if CFG.tasks[w.task].source == "local" else {}),
    output:
        train=R("data/{task}/train.parquet"),
        dev=R("data/{task}/dev.parquet"),
        test=R("data/{task}/test.parquet"),
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: stage_hash(task=w.task),
    log:
        R("logs/prepare/{task}.log"),
    conda:
        ENV
    shell:
        "promptgrid prepare --config {params.config:q} --task {wildcards.task:q} > {log:q} 2>&1"
