"""Zero-shot evaluation: every source prompt on a target in one process, against one process per pair.

Prompts: the default study's 6 sources x 2 seeds (results/default/prompts, random vocabulary prompts
where a file is missing), scored on amazon's test split. Both sides run bench/zeroshot_worker.py
in a fresh Python process (import promptgrid, load MiniLM, score): once with all 12 prompts in one
training.predict_bank pass (what the zeroshot job does), or 12 times with one prompt each. The worker
also reports how long its scoring took, which the scaling estimate uses.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common as C
import torch

TARGET = "amazon"
WORKER = Path(__file__).with_name("zeroshot_worker.py")


def source_prompts(bb) -> tuple:
    """(K, L, d) prompts of every (source, seed) and how many came from the default study's files."""
    from promptgrid.storage.files import load_prompt

    cfg = C.study()
    prompts, found = [], 0
    for source in cfg.sources:
        for seed in cfg.seeds:
            path = C.ROOT / "results/default/prompts/minilm/task" / source / f"seed{seed}.safetensors"
            if path.exists():
                prompts.append(load_prompt(path, expect_dim=bb.embed_dim)[0].float())
                found += 1
            else:
                prompts.append(C.init(bb, 100 + len(prompts)))
    return torch.stack(prompts), found


def worker(data: Path, prompts: Path, *index) -> tuple:
    """(wall seconds, scores, scoring seconds) of one worker process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(WORKER), str(data), str(prompts), *map(str, index)],
                         capture_output=True, text=True, check=True)
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    return time.perf_counter() - t0, reply["scores"], reply["eval_s"]


def run(quick: bool) -> dict:
    repeats = 2 if quick else 4
    bb = C.backbone()  # only for the embedding matrix of fallback prompts
    prompts, found = source_prompts(bb)
    K = len(prompts)
    test = C.splits(TARGET)["test"]
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-zeroshot-"))
    torch.save({"texts": list(test["text"]), "labels": test["label"].tolist(),
                "label_texts": C.study().tasks[TARGET].label_texts}, tmp / "data.pt")
    torch.save(prompts, tmp / "prompts.pt")

    def one_process(r):
        seconds, scores, eval_s = worker(tmp / "data.pt", tmp / "prompts.pt")
        return {"s": seconds, "scores": scores, "eval_s": eval_s}

    def per_pair(r):
        seconds, scores, eval_s = 0.0, [], 0.0
        for k in range(K):
            s, sc, e = worker(tmp / "data.pt", tmp / "prompts.pt", k)
            seconds, eval_s = seconds + s, eval_s + e
            scores += sc
        return {"s": seconds, "scores": scores, "eval_s": eval_s}

    raw = C.alternate({"per_pair": per_pair, "one_process": one_process}, repeats)
    s = {k: C.stats(C.col(v, "s")) for k, v in raw.items()}
    s["scoring"] = C.stats(C.col(raw["one_process"], "eval_s"))
    same = raw["per_pair"][0]["scores"] == raw["one_process"][0]["scores"]
    out = {"prompts": K, "from_study_files": found, "test_examples": len(test), "repeats": repeats,
           "seconds": s, "speedup": C.ratio(s["per_pair"], s["one_process"]), "same_scores": same,
           "max_score_diff": max(abs(a - b) for a, b in zip(raw["per_pair"][0]["scores"],
                                                              raw["one_process"][0]["scores"])),
           "eval_s_per_prompt_example": s["scoring"]["median"] / (K * len(test))}
    out["goal"] = {"speedup": out["speedup"], "met": out["speedup"] >= 3}
    rows = [[f"{K} processes, one prompt each", C.triple(s["per_pair"]), "1.00x"],
            [f"1 process, {K} prompts in one predict_bank pass", C.triple(s["one_process"]),
             f"{out['speedup']:.2f}x"],
            ["(of which scoring, model loaded: the rest is start + import + load)", C.triple(s["scoring"]), ""]]
    out["table"] = C.md_table(["how", "seconds min / median / max", "speed-up (median)"], rows)
    print(out["table"])
    print(f"prompts from results/default: {found}/{K}; identical scores both ways: {same} "
          f"(max diff {out['max_score_diff']:.2f} points)")
    return out


if __name__ == "__main__":
    run("--quick" in sys.argv)
