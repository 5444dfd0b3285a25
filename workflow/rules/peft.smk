# Prompt banks as PEFT PromptTuning adapters (promptgrid.pipeline.peft).


rule export_peft:
    """Every task prompt as a PEFT PromptTuning adapter folder (a prompt bank others can load)."""
    input:
        lambda w: W.all_task_prompts(w.backbone),
    output:
        directory(R(layout.peft_bank("{backbone}"))),
    log:
        R(layout.log("peft", "{backbone}")),
    conda:
        ENV
    params:
        config=CONFIG_JSON,
    shell:
        "promptgrid export-peft-bank --config {params.config:q} --backbone {wildcards.backbone:q} "
        "--out {output:q} > {log:q} 2>&1"
