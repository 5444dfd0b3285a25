rule prepare_task:
    input:
        unpack(lambda w: W.prepare_inputs(w.task)),
    output:
        **{split: R(layout.data("{task}", split)) for split in layout.SPLITS},
    log:
        R(layout.log("prepare", "{task}")),
    conda:
        ENV
    params:
        config=CONFIG_JSON,
        cfg_hash=lambda w: W.hash("prepare", task=w.task),
    shell:
        "promptgrid prepare --config {params.config:q} --task {wildcards.task:q} > {log:q} 2>&1"
