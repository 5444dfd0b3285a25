rule fetch_source:
    """A data source's pinned file into the machine's cache ($PROMPTGRID_CACHE), once, checked against its
    sha256; the cache is shared by studies and is no output, so no run deletes it. The output is the study's
    stamp of which file it used. A local rule: on a cluster the submitting node reaches the registries."""
    output:
        R(layout.source_stamp("{source}")),
    log:
        R(layout.log("fetch", "{source}")),
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        config=CONFIG_JSON,
        pin=lambda w: W.source_pin(w.source),
    shell:
        "promptgrid fetch --config {params.config:q} --source {wildcards.source:q} > {log:q} 2>&1"
