"""Prompt bank: K runs trained in one forward pass (train_runs with K runs) against K sequential runs.

Task amazon (short snippets of variable length: a bank pads K*8 rows to their longest, which costs a
little of this win; the multi-emo texts measured in bench/README.md filled all 32 tokens), evaluation at step 0 and at the
last step, as in a job, on the study's 50 dev examples (20 in quick mode). Each run k uses data seed k, in both ways,
so the two ways train the same runs; the table checks that their dev scores agree.
"""
from __future__ import annotations

import common as C

TASK = "amazon"


def run(quick: bool) -> dict:
    # quick: 20 dev examples (evaluation would otherwise be most of the time); full: the study's 50
    steps, repeats, n_dev, sizes = (3, 2, 20, (1, 4, 8, 16)) if quick else (10, 3, 50, (1, 4, 8, 16))
    bb = C.backbone()
    head = bb.task_head(C.study().tasks[TASK].label_texts)
    train = C.encoded(bb, TASK, "train")
    dev = C.encoded(bb, TASK, "dev")
    dev = C.scoring.EncodedSplit(dev.ids[:n_dev], dev.labels[:n_dev])
    cfg = C.train_cfg(steps)

    def sequential(K):
        def fn(r):
            parts = [C.timed_train(bb, head, train, dev, cfg, [k]) for k in range(K)]
            return {"s": sum(p[0] + p[1] for p in parts), "train_s": sum(p[0] for p in parts),
                    "dev": [C.final_dev(p[2][0]) for p in parts]}
        return fn

    def bank(K):
        def fn(r):
            train_s, eval_s, results = C.timed_train(bb, head, train, dev, cfg, list(range(K)))
            return {"s": train_s + eval_s, "train_s": train_s, "dev": [C.final_dev(x) for x in results]}
        return fn

    C.timed_train(bb, head, train, dev, C.train_cfg(2), [0])  # warm-up
    out = {"steps": steps, "repeats": repeats, "dev_examples": n_dev, "sizes": {}}
    rows = []
    for K in sizes:
        raw = C.alternate({"sequential": sequential(K), "bank": bank(K)}, repeats)
        s = {k: C.stats(C.col(v, "s")) for k, v in raw.items()}
        t = {k: C.stats(C.col(v, "train_s")) for k, v in raw.items()}
        diff = max(abs(a - b) for a, b in zip(raw["sequential"][0]["dev"], raw["bank"][0]["dev"]))
        out["sizes"][K] = {"seconds": s, "train_seconds": t, "speedup": C.ratio(s["sequential"], s["bank"]),
                           "train_speedup": C.ratio(t["sequential"], t["bank"]), "max_dev_diff": diff,
                           "train_s_per_run_step": t["bank"]["median"] / (K * steps),
                           "eval_s_per_run": (s["bank"]["median"] - t["bank"]["median"]) / K}
        v = out["sizes"][K]
        rows.append([K, C.triple(s["sequential"], 1), C.triple(s["bank"], 1), f"{v['speedup']:.2f}x",
                     f"{v['train_speedup']:.2f}x", f"{diff:.1f}"])
        print(f"K={K}: sequential {C.triple(s['sequential'], 1)} s, bank {C.triple(s['bank'], 1)} s", flush=True)
    out["table"] = C.md_table(["K runs", "K sequential runs, s (min / median / max)", "one bank, s",
                               "speed-up (median)", "speed-up, training steps only",
                               "max |dev diff| (points)"], rows)
    print(out["table"])
    return out


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
