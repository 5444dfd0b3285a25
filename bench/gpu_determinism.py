"""Is a GPU training job bit-identical when rerun? (README, GPUs: determinism.)

Trains the same bank twice, with the real engine, on a bundled study's backbone and first target, under the
job's own settings (``set_deterministic``: cuBLAS workspace, deterministic algorithms with warnings), and
once more with cuDNN's attention kernel switched off, and prints whether the prompts match bit for bit.

    python bench/gpu_determinism.py BUNDLE_DIR [--steps 30]   (writes determinism.json to $OUT or --out)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/gpu-out"))
    args = ap.parse_args()
    bundle = Path(args.bundle).resolve()
    os.chdir(bundle)  # a bundle's config paths start in its folder
    import dataclasses

    import torch

    from promptgrid.engine.training import RunSpec, train_runs
    from promptgrid.pipeline.context import Study

    study = Study.from_file(bundle / "config.yaml")
    cfg = study.cfg
    backbone, task = next(iter(cfg.backbones)), cfg.targets[0]
    bb = study.backbone(backbone)  # resolves the device (and set_deterministic on a GPU) first
    obj = study.objective(backbone, task)
    tr, dev = study.encoded(backbone, task, "train"), study.encoded(backbone, task, "dev")
    tcfg = dataclasses.replace(study.training, steps=args.steps, eval_every=args.steps, early_step=1)
    runs = [RunSpec(f"seed{s}", s, study.fresh_init(backbone, task, s)) for s in cfg.seeds]

    def once():
        t0 = time.time()
        out = train_runs(bb, obj, tr, dev, runs, tcfg, log=lambda m: None)
        return torch.stack([r.best_prompt for r in out]), time.time() - t0

    first, t1 = once()
    again, t2 = once()
    result = {"device": str(bb.device), "precision": study.precision, "attention": study.compute.attention,
              "task": task, "steps": args.steps, "runs": len(runs),
              "rerun_bit_identical": bool(torch.equal(first, again)),
              "rerun_max_abs_diff": float((first - again).abs().max()), "seconds": [t1, t2]}
    if bb.device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        third, _ = once()
        fourth, _ = once()
        result["no_cudnn_sdp_rerun_bit_identical"] = bool(torch.equal(third, fourth))
        result["no_cudnn_sdp_vs_default_max_abs_diff"] = float((third - first).abs().max())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "determinism.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
