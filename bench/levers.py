"""Levers: each speed choice of the engine, switched off one at a time, with the dev score beside it.

Task nyt (VADER's NYT editorial snippets, of variable length under max_length 32), MiniLM, the default
study's training section, dev 100 examples. Training rows: training.train_runs for ``steps`` steps,
evaluation time subtracted, seed = repeat; the dev column is the mean over those seeds after the
last step. Evaluation rows: training.predict_bank of 4 prompts on the dev split.
Baseline = the lever off; "with lever" = what promptgrid does (except torch.compile, which promptgrid
leaves off, and bf16, which ``training.precision: auto`` turns on only on CPUs with AVX512-BF16 or AMX:
the table says whether they pay on the CPU it ran on).
"""
from __future__ import annotations

import copy
import time

import common as C
import torch

TASK = "nyt"


def pad_to_max(bb):
    """A view of ``bb`` whose batches are padded to max_length (no dynamic padding)."""
    padded = copy.copy(bb)
    length = bb.cfg.max_length

    def collate(id_lists):
        batch = type(bb).collate(bb, id_lists)
        extra = length - batch.input_ids.shape[1]
        if extra > 0:
            batch.input_ids = torch.nn.functional.pad(batch.input_ids, (0, extra), value=bb.pad_id)
            batch.attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, extra), value=0)
        return batch

    padded.collate = collate
    return padded


def compiled(bb):
    view = copy.copy(bb)
    view.model = torch.compile(bb.model, dynamic=True)
    return view


def run(quick: bool) -> dict:
    steps, repeats, with_compile = (20, 2, False) if quick else (30, 3, True)
    fast, sdpa = C.backbone(), C.backbone("sdpa")
    head = fast.task_head(C.study().tasks[TASK].label_texts)
    train, dev = C.encoded(fast, TASK, "train"), C.encoded(fast, TASK, "dev")
    prompts = torch.stack([C.init(fast, 200 + k) for k in range(4)])
    padded = pad_to_max(fast)
    out = {"steps": steps, "repeats": repeats, "task": TASK}

    def trainer(bb, precision="fp32", n_steps=steps):
        def fn(r):
            seconds, _, res = C.timed_train(bb, head, train, dev, C.train_cfg(n_steps, precision=precision), [r])
            return {"s": seconds * steps / n_steps, "dev": C.final_dev(res[0])}
        return fn

    # bf16 on a CPU without AVX512-BF16 / AMX runs ~25x slower (bench/README.md, section 1c): a 2-step probe,
    # scaled to the step count, says so without spending an hour; its dev column is then not comparable
    bf16_steps = steps if C.fast_bf16() else 2
    variants = {"promptgrid": trainer(fast), "pad_to_max": trainer(padded), "sdpa": trainer(sdpa),
                "bf16": trainer(fast, "bf16", bf16_steps)}
    if with_compile:
        cbb = compiled(fast)
        t0 = time.perf_counter()
        C.timed_train(cbb, head, train, dev, C.train_cfg(2), [0])
        out["compile_cold_s"] = time.perf_counter() - t0
        variants["compile"] = trainer(cbb)
    C.timed_train(fast, head, train, dev, C.train_cfg(2), [0])  # warm-up
    tr = C.alternate(variants, repeats)

    def evaluator(bb, no_grad=False):
        def fn(r):
            t0 = time.perf_counter()
            if no_grad:
                with torch.no_grad():
                    logits = C.scoring.predict_bank.__wrapped__(bb, head, prompts, dev, 64)
            else:
                logits = C.scoring.predict_bank(bb, head, prompts, dev, 64)
            seconds = time.perf_counter() - t0
            acc = [100.0 * (logits[k].argmax(-1) == dev.labels).float().mean().item() for k in range(len(prompts))]
            return {"s": seconds, "dev": C.mean(acc)}
        return fn

    ev = C.alternate({"promptgrid": evaluator(fast), "no_grad": evaluator(fast, no_grad=True),
                      "pad_to_max": evaluator(padded)}, repeats + 1)

    texts = list(C.splits(TASK)["train"]["text"][:8])
    label_texts = C.study().tasks[TASK].label_texts

    def per_call(fn, n=5):
        return lambda r: {"s": C.wall(lambda: [fn() for _ in range(n)]) / n}

    def tokenize():
        return fast.tokenizer(texts, truncation=True, max_length=fast.cfg.max_length)
    cache = C.alternate({"label_head": per_call(lambda: fast.task_head(label_texts)),
                         "tokenize_batch": per_call(tokenize)}, repeats + 1)

    def S(rows):
        return C.stats(C.col(rows, "s"))
    def D(rows):
        return C.mean(C.col(rows, "dev"))
    rows, out["levers"] = [], {}

    def add(name, what, off_rows, on_rows, note=""):
        off, on = S(off_rows), S(on_rows)
        out["levers"][name] = {"off_s": off, "on_s": on, "speedup": C.ratio(off, on), "dev_off": D(off_rows),
                               "dev_on": D(on_rows), "note": note}
        rows.append([name, what, C.triple(off), C.triple(on), f"{C.ratio(off, on):.2f}x", f"{D(off_rows):.1f}",
                     f"{D(on_rows):.1f}", note])

    add("dynamic padding + length bucketing (training)", f"{steps} steps", tr["pad_to_max"], tr["promptgrid"],
        "off: every batch padded to max_length 32")
    add("dynamic padding + length bucketing (evaluation)", "4 prompts x dev", ev["pad_to_max"], ev["promptgrid"])
    add("torch.inference_mode vs no_grad (evaluation)", "4 prompts x dev", ev["no_grad"], ev["promptgrid"])
    add("eager attention (training.attention: auto on a CPU)", f"{steps} steps", tr["sdpa"], tr["promptgrid"],
        "off: sdpa (Hugging Face's default); both IEEE fp32")
    add("bf16 autocast (training.precision: bf16)", f"{steps} steps", tr["promptgrid"], tr["bf16"],
        "off: IEEE fp32" + ("" if bf16_steps == steps else
                            f"; this CPU has no fast bf16, so a {bf16_steps}-step probe scaled to {steps} steps "
                            f"(its dev column is after {bf16_steps} steps), and `auto` resolves to fp32 here"))
    if with_compile:
        add("torch.compile(model, dynamic=True)", f"{steps} steps", tr["promptgrid"], tr["compile"],
            f"cold compile {out['compile_cold_s']:.0f} s not in the on column")
    else:
        rows.append(["torch.compile(model, dynamic=True)", "", "", "", "", "", "",
                     "full mode only (cold compile takes minutes)"])
    step = S(tr["promptgrid"])["median"] / steps
    for name, key, what in (("cached label embeddings", "label_head", "TaskHead once per task"),
                            ("cached tokenized data", "tokenize_batch", "ids once per split")):
        extra = S(cache[key])["median"]
        out["levers"][name] = {"per_call_s": S(cache[key]), "speedup": (step + extra) / step}
        rows.append([name, "per training step", f"{step + extra:.3f}", f"{step:.3f}", f"{(step + extra) / step:.2f}x",
                     "same", "same", f"{what}; redoing it costs {1000 * extra:.1f} ms per step (measured)"])
    out["table"] = C.md_table(["lever", "measured on", "off: s min / median / max", "on: s", "speed-up (median)",
                               "dev off", "dev on", "note"], rows)
    print(out["table"])
    return out


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
