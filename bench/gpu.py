"""GPU bench: prompt banks (input and deep prompts) against sequential PEFT loops, and a banked step against a GEMM.

    python bench/gpu.py [--out DIR] [--steps N] [--prompt-length L]   # on a GPU: < 3 min on one H100
    python bench/gpu.py --smoke --out DIR                               # tiny configs, 2 steps, CPU, fp32

Writes ``gpu.json`` (every number) and ``gpu.md`` (the table) to ``--out`` (default ``$OUT``, else
``bench/gpu-out``) and prints the table last.

What is measured, per model size (BERT-base and BERT-large shapes from ``BertConfig``, random weights seeded,
fp32 on the device, SDPA attention, no pooler) and bank size K = 1, 8, 32, 64:

* **bank**: ``promptgrid.engine.training.train_runs`` with K runs (data seeds 0..K-1), ``precision: bf16``
  (autocast), batch 8 per run, prompt length L (100, as SPoT and PANDA), ``steps`` steps, the encoder
  backbone's loss (mean pool over prompt and tokens, cosine with the label embeddings x 20, cross-entropy). Time
  runs from the first forward pass of step 1 to the evaluation after the last step (CUDA events): step 0 (the
  first allocations, the optimiser state) and the dev evaluations at step 0 and at the end are left out; median
  over ``--repeats`` (after a 2-step warm-up of each K).
* **PEFT**: ``get_peft_model(model, PromptTuningConfig(FEATURE_EXTRACTION, num_virtual_tokens=L))`` on a copy of
  the same model, one run at a time under ``torch.autocast(bf16)``, AdamW on the prompt (same lr and weight
  decay), the same initial prompt, the same examples per step (``scoring.batch_indices`` of seed k) and the
  same loss. The sequential time for K runs is the sum of runs 0..K-1 of one pass over max(K) runs (after a
  2-step warm-up run), each timed from the start of step 1 to its last optimizer step (CUDA events): step 0 and
  the per-run set-up are left out, as the bank's are. One difference, in PEFT's favour: its token ids sit on the device from the
  start, where the bank collates each step's batch on the host. The table's last two columns check that both
  did the same work: each run's mean training loss and the cosine of its prompt update, bank against PEFT.
* Every row is 128 tokens of real registry-source text (``bench/gpu_data.py``), so both sides compute the same shapes.
* **Deep prompts** (``--deep-models``, default BERT-base): the same bank against sequential PEFT loops with (L, D)
  prompts, D = layers x 2 x hidden, drawn N(0, 1) (``random_deep_prompt``): ``PrefixTuningConfig`` instead of
  ``PromptTuningConfig``, the pool over the 128 tokens only; a second table (the goals above are input prompts').
* **TFLOP/s** of a banked step: forward 2·N per token through the N matmul weights of the encoder layers,
  backward to the inputs only (frozen weights: no weight gradients) another 2·N, attention 4·T²·h per row and
  layer forward and twice that backward; LayerNorm, GELU, softmax and the optimiser are not counted. It is set
  against the bf16 GEMMs of the same shapes, timed the same way in the same run: every Linear of one layer at
  the tokens of one forward pass of that step (``F.linear`` forward and ``dY @ W`` backward, random data).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import gpu_data  # noqa: E402
import gpu_report as R  # noqa: E402

from promptgrid.config import BackboneConfig, PromptConfig, TrainingConfig  # noqa: E402
from promptgrid.engine import scoring, training  # noqa: E402
from promptgrid.models.loading import wrap_model  # noqa: E402
from promptgrid.models.precision import resolve_precision  # noqa: E402
from promptgrid.models.prefix import random_deep_prompt  # noqa: E402
from promptgrid.models.prompt import init_prompt  # noqa: E402
from promptgrid.objectives.classification import ClassificationObjective  # noqa: E402

SIZES = (1, 8, 32, 64)
BATCH = 8
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
MODELS = {  # name: (hidden, layers, heads, FFN width); smoke: tiny shapes of the same families
    "base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096),
    "smoke-base": (32, 2, 2, 64), "smoke-large": (48, 3, 3, 96),
}


# ---------------------------------------------------------------- timing
class Clock:
    """Marks on the device's timeline: CUDA events on a GPU (no host sync until read), the host clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, a, b) -> float:
        if not self.cuda:
            return b - a
        b.synchronize()
        return a.elapsed_time(b) / 1000


class TimedObjective:
    """The classification objective, marking the first forward pass of step 1 (step 0 allocates the activations
    and the optimiser state: left out, as in the PEFT loop) and the evaluation that follows the last optimizer
    step; keeps the rows of each forward pass and the prompts that evaluation scores."""

    def __init__(self, inner: ClassificationObjective, clock: Clock, rows_per_step: int):
        self.inner, self.clock, self.rows_per_step = inner, clock, rows_per_step
        self.start = self.end = self.final = None
        self.rows: list = []

    def forward(self, prompts, split, idx):
        if self.start is None and sum(self.rows) >= self.rows_per_step:
            self.start = self.clock.mark()
        self.rows.append(len(idx))
        return self.inner.forward(prompts, split, idx)

    def kd(self, *args):
        return self.inner.kd(*args)

    def score(self, prompts, split, batch_size=64, precision="fp32"):
        if self.start is not None and self.end is None:
            self.end = self.clock.mark()
            self.final = prompts.detach().float().cpu()
        return self.inner.score(prompts, split, batch_size, precision)


def median_seconds(fn, clock: Clock, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        a = clock.mark()
        fn()
        times.append(clock.seconds(a, clock.mark()))
    return statistics.median(times)


# ---------------------------------------------------------------- models and data
def build_backbone(name: str, device: torch.device, tokenizer, attention: str):
    """A BERT of ``name``'s shape, random weights (seed 0), fp32 on ``device``, wrapped as promptgrid's encoder."""
    from transformers import BertConfig, BertModel

    h, layers, heads, ffn = MODELS[name]
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=h, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=512,
                     attn_implementation=attention)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it computes: seconds, not a minute, for BERT-large
        model = BertModel(cfg, add_pooling_layer=False)  # the encoder backbone pools itself
    bcfg = BackboneConfig(model=f"random BERT-{name} ({h}x{layers})", kind="encoder", max_length=gpu_data.TOKENS)
    return wrap_model(f"bert-{name}", bcfg, model, tokenizer, revision="random-init")


def matmul_params(model) -> tuple:
    """(N, the (in, out) shapes of one layer's Linears): the encoder layers' matmul weights."""
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in name]
    layer0 = [(m.in_features, m.out_features) for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layer.0." in name]
    return sum(m.weight.numel() for m in linears), layer0


def step_flops(n_params: int, hidden: int, layers: int, rows: int, queries: int, keys: int) -> float:
    """FLOPs of a step of ``rows`` rows of ``queries`` positions attending to ``keys`` each (module docstring)."""
    return 4 * n_params * rows * queries + 3 * 4 * rows * queries * keys * hidden * layers


# ---------------------------------------------------------------- the two ways of training K prompts
def bank_run(bb, head, train, dev, inits, cfg, clock: Clock) -> dict:
    """train_runs on runs 0..K-1; seconds from the start of step 1 to the end of the last step."""
    runs = [training.RunSpec(f"run{k}", k, p) for k, p in enumerate(inits)]
    if clock.cuda:
        torch.cuda.empty_cache()  # the token budget reads free memory: each K starts from the same state
    timed = TimedObjective(ClassificationObjective(bb, head), clock, len(runs) * cfg.batch_size)
    results = training.train_runs(bb, timed, train, dev, runs, cfg, log=lambda msg: None)
    return {"seconds": clock.seconds(timed.start, timed.end), "rows_per_pass": max(timed.rows),
            "passes_per_step": len(timed.rows) / cfg.steps, "final": timed.final,
            "loss": [r.curve[-1]["train_loss"] for r in results]}


class PeftLoop:
    """Prompt tuning one run at a time the way a PEFT user writes it, with the encoder backbone's loss; ``kind``
    deep: PrefixTuning, whose (L, D) embedding has promptgrid's deep-prompt layout (promptgrid.models.prefix)."""

    def __init__(self, bb, head, ids: torch.Tensor, labels: torch.Tensor, L: int, cfg: TrainingConfig, kind: str):
        from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

        self.device, self.cfg, self.L = bb.device, cfg, L
        config = PrefixTuningConfig if kind == "deep" else PromptTuningConfig
        self.model = get_peft_model(copy.deepcopy(bb.model), config(
            task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=L)).to(self.device)
        self.model.eval()
        self.prompt = self.model.prompt_encoder["default"].embedding.weight  # (L, d) or deep (L, D)
        self.ids, self.labels = ids.to(self.device), labels.to(self.device)
        self.mask = torch.ones_like(self.ids)
        self.label_emb, self.temperature = head.label_embeddings, bb.cfg.temperature

    def run(self, init: torch.Tensor, seed: int, steps: int, clock: Clock) -> tuple:
        """(mark at the start of step 1, end mark, summed loss tensor, final prompt) of ``steps`` steps."""
        with torch.no_grad():
            self.prompt.copy_(init)
        opt = torch.optim.AdamW([self.prompt], lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        loss_sum = torch.zeros((), device=self.device)
        start = None
        for step in range(steps):
            if step == 1:  # step 0 allocates AdamW's state: left out, as in the bank
                start = clock.mark()
            idx = scoring.batch_indices(len(self.ids), BATCH, seed, step).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
                hidden = self.model(input_ids=self.ids[idx], attention_mask=self.mask[idx]).last_hidden_state
                pooled = hidden.mean(1)  # every position is real: the prompt's L (deep: no rows) and the tokens
                logits = self.temperature * F.normalize(pooled.float(), dim=-1) @ self.label_emb.T
                loss = F.cross_entropy(logits, self.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        return start, clock.mark(), loss_sum, self.prompt.detach().float().cpu().clone()


# ---------------------------------------------------------------- one model size
def gemm_rate(shapes: list, tokens: int, device: torch.device, clock: Clock, repeats: int, dtype) -> float:
    """FLOP/s of one layer's Linears at ``tokens`` tokens: F.linear forward and dY @ W backward, in ``dtype``."""
    gen = torch.Generator(device=device).manual_seed(1)
    sets = [(torch.randn(tokens, i, device=device, dtype=dtype, generator=gen),
             torch.randn(o, i, device=device, dtype=dtype, generator=gen) * 0.02,
             torch.randn(tokens, o, device=device, dtype=dtype, generator=gen)) for i, o in shapes]

    def layer():
        for x, w, dy in sets:
            F.linear(x, w)
            dy @ w
    seconds = median_seconds(layer, clock, repeats)
    return 4 * tokens * sum(i * o for i, o in shapes) / seconds


def bench_model(name: str, data, device: torch.device, args, clock: Clock, log, kind: str = "input") -> dict:
    tok = data.tokenizer()
    bb = build_backbone(name, device, tok, "sdpa")
    head = bb.task_head(data.label_texts)
    ids = torch.as_tensor(data.ids[:, : args.tokens])
    labels = torch.as_tensor(data.labels)
    train = scoring.EncodedSplit(ids.tolist(), labels)
    dev = scoring.EncodedSplit(train.ids[:BATCH], labels[:BATCH])  # scored at step 0 and at the end, not timed
    cfg = TrainingConfig(steps=args.steps, batch_size=BATCH, eval_every=args.steps + 1, checkpoint_every=args.steps + 1,
                         early_step=0, eval_batch_size=64, precision=args.precision)
    warm = TrainingConfig(**{**cfg.__dict__, "steps": 2, "eval_every": 3, "checkpoint_every": 3})
    embedding = bb.embed_layer.weight.detach().float().cpu()
    inits = [random_deep_prompt(args.prompt_length, bb.deep_width, 1.0, k) if kind == "deep" else
             init_prompt(PromptConfig(length=args.prompt_length), embedding, k) for k in range(max(args.sizes))]
    n_params, shapes = matmul_params(bb.model)
    h, layers = MODELS[name][0], MODELS[name][1]
    T = args.prompt_length + args.tokens  # keys per row; queries: T for input prompts, the tokens for deep ones
    Q = args.tokens if kind == "deep" else T
    timed_steps = args.steps - 1  # step 0 of every run is left out (see TimedObjective)
    out = {"hidden": h, "layers": layers, "matmul_params": n_params, "tokens_per_row": T, "timed_steps": timed_steps,
           "sizes": {}}

    t0 = time.time()
    for K in args.sizes:  # kernels, cuBLAS handles and heuristics for every shape: not counted
        bank_run(bb, head, train, dev, inits[:K], warm, clock)
    out["bank_warmup_s"] = time.time() - t0
    for K in args.sizes:
        reps = [bank_run(bb, head, train, dev, inits[:K], cfg, clock) for _ in range(args.repeats)]
        s = statistics.median(r["seconds"] for r in reps)
        rows = reps[-1]["rows_per_pass"]
        flops = step_flops(n_params, h, layers, K * BATCH, Q, T) * timed_steps
        out["sizes"][K] = {"bank_s": s, "bank_s_all": [r["seconds"] for r in reps], "rows_per_pass": rows,
                           "passes_per_step": reps[-1]["passes_per_step"],
                           "bank_examples_per_s": K * BATCH * timed_steps / s, "bank_tflops": flops / s / 1e12,
                           "bank_loss": reps[-1]["loss"], "_final": reps[-1]["final"]}
        log(f"[{name}] bank K={K}: {s:.3f} s for {timed_steps} steps ({K * BATCH * timed_steps / s:,.0f} ex/s, "
            f"{flops / s / 1e12:.1f} TFLOP/s, {reps[-1]['passes_per_step']:.0f} pass(es) of {rows} rows per step)")

    t0 = time.time()
    peft = PeftLoop(bb, head, ids, labels, args.prompt_length, cfg, kind)
    peft.run(inits[0], 0, 2, clock)  # warm-up
    marks = [peft.run(inits[k], k, args.steps, clock) for k in range(max(args.sizes))]
    per_run = [clock.seconds(a, b) for a, b, _, _ in marks]
    out["peft_wall_s"] = time.time() - t0
    out["peft_run_s"] = per_run
    for K in args.sizes:
        e = out["sizes"][K]
        e["peft_s"] = sum(per_run[:K])
        e["peft_examples_per_s"] = K * BATCH * timed_steps / e["peft_s"]
        e["speedup"] = e["bank_examples_per_s"] / e["peft_examples_per_s"]
        # same work: each run's mean training loss, and its prompt update, against the PEFT run of the same seed
        peft_loss = [m[2].item() / args.steps for m in marks[:K]]
        e["max_loss_diff"] = max(abs(a - b) for a, b in zip(e["bank_loss"], peft_loss))
        final = e.pop("_final")
        cos = [F.cosine_similarity((final[k] - inits[k]).flatten(), (marks[k][3] - inits[k]).flatten(), 0).item()
               for k in range(K)]
        e["update_cosine_min"] = min(cos)
        tokens = e["rows_per_pass"] * Q
        e["gemm_tokens"] = tokens
        e["gemm_tflops"] = gemm_rate(shapes, tokens, device, clock, args.gemm_repeats, DTYPES[args.precision]) / 1e12
        e["gemm_share"] = e["bank_tflops"] / e["gemm_tflops"]
        log(f"[{name}] K={K}: PEFT {e['peft_examples_per_s']:,.0f} ex/s, bank {e['speedup']:.2f}x; max |loss diff| "
            f"{e['max_loss_diff']:.4f}, min update cosine {e['update_cosine_min']:.3f}; GEMM {e['gemm_tflops']:.1f} "
            f"TFLOP/s at {tokens} tokens: step at {100 * e['gemm_share']:.0f}%")
    del peft, bb
    if clock.cuda:
        torch.cuda.empty_cache()
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny configs, 2 steps, on the CPU: checks the script")
    p.add_argument("--out", type=Path, default=None, help="folder for gpu.json and gpu.md (default $OUT)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if there is one)")
    p.add_argument("--models", default="base,large", help="comma-separated: base, large")
    p.add_argument("--deep-models", default="base", help="models benched with deep prompts too ('' for none)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="bank sizes K, comma-separated")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 12; smoke 2)")
    p.add_argument("--repeats", type=int, default=None, help="bank repeats per K (default 3; smoke 1)")
    p.add_argument("--gemm-repeats", type=int, default=None, help="GEMM timing repeats (default 7; smoke 1)")
    p.add_argument("--prompt-length", type=int, default=None, help="L (default 100; smoke 4)")
    p.add_argument("--tokens", type=int, default=None, help="text tokens per row, <= 128 (default 128; smoke 16)")
    p.add_argument("--precision", default=None, choices=("bf16", "fp32", "auto"),
                   help="bank, PEFT loop and GEMMs (default bf16; smoke: fp32, which every CPU computes fast)")
    args = p.parse_args(argv)
    smoke = args.smoke
    for key, full, tiny in (("steps", 12, 2), ("repeats", 3, 1), ("gemm_repeats", 7, 1), ("prompt_length", 100, 4),
                            ("tokens", gpu_data.TOKENS, 16)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if smoke else full)
        if getattr(args, key) < (2 if key == "steps" else 1):
            p.error(f"--{key.replace('_', '-')} must be >= {2 if key == 'steps' else 1} (step 0 is not timed)")
    if args.tokens > gpu_data.TOKENS:
        p.error(f"--tokens must be <= {gpu_data.TOKENS} (the stored rows' length)")
    args.sizes = sorted({int(k) for k in args.sizes.split(",")})
    for key in ("models", "deep_models"):
        names = [m.strip() for m in getattr(args, key).split(",") if m.strip()]
        bad = [m for m in names if m not in ("base", "large")]
        if bad or (key == "models" and not names):
            p.error(f"--{key.replace('_', '-')}: unknown {bad or names}; choose from base, large")
        setattr(args, key, names)
    if args.out is None:
        args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "gpu-out"
    if args.device is None:
        args.device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    args.precision = resolve_precision(args.precision or ("fp32" if smoke else "bf16"), args.device)
    return args


def full_table(result: dict) -> str:
    """gpu_report's table of the input prompts, then the deep-prompt rows in its columns (no GPU goal set for them)."""
    deep = {f"{n}, deep": m for n, m in result["deep"]["models"].items()}
    rows = R.table({**result, "models": deep, "goals": {}}).splitlines()[2:] + [""] if deep else []  # "", header, rows
    best = [(n, *max(m["sizes"].items(), key=lambda kv: kv[1]["speedup"])) for n, m in deep.items()]
    title = ["", "Deep prompts (L x D prefixes; PEFT PrefixTuning in turn):"] if deep else []
    return "\n".join([R.table(result), *title, *rows] + [f"Deep prompts, bank / sequential PEFT PrefixTuning on BERT-"
                      f"{n.split(',')[0]}: {e['speedup']:.2f}x at K={K} (no GPU goal set)." for n, K, e in best])


def write(out: Path, result: dict) -> None:
    from promptgrid.storage.files import atomic_write_text

    R.write(out, result)  # gpu.json and gpu.md; gpu.md then gets the deep-prompt rows too
    atomic_write_text(out / "gpu.md", full_table(result) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    device = torch.device(args.device)
    clock = Clock(device)

    def log(msg):
        print(msg, flush=True)

    data = gpu_data.load()
    dtype = DTYPES[args.precision]

    def gemm_square():  # n^3 in the bench's dtype: the card's rate at a shape that fills it, for scale
        n = 256 if args.smoke else 8192
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        return n, 2 * n ** 3 / median_seconds(lambda: a @ b, clock, 10) / 1e12

    result = {"machine": R.machine(device, gemm_square), "models": {}, "goals": {}, "deep": {"models": {}},
              "setup": {"mode": "smoke (tiny configs)" if args.smoke else "full",
                        "precision": "bf16 autocast" if args.precision == "bf16" else "IEEE fp32",
                        "prompt_length": args.prompt_length, "tokens": args.tokens, "steps": args.steps,
                        "repeats": args.repeats, "sizes": args.sizes, "batch": BATCH, "rows_available": len(data.ids),
                        "data": data.source}, "seconds": 0.0}
    log(R.device_line(result["machine"]))
    for kind, name in [("input", n) for n in args.models] + [("deep", n) for n in args.deep_models]:
        shape = f"smoke-{name}" if args.smoke else name
        models = result["models"] if kind == "input" else result["deep"]["models"]
        models[name] = bench_model(shape, data, device, args, clock, log if kind == "input" else
                                   lambda msg: log("[deep] " + msg), kind)
        result["goals"] = R.goals(result["models"])
        result["seconds"] = time.time() - t0
        write(args.out, result)  # after each model: a run cut short still leaves what it measured
    bad = [f"{n} K={K} {k}" for m in (result["models"], result["deep"]["models"]) for n, x in m.items()
           for K, e in x["sizes"].items() for k, v in e.items() if isinstance(v, float) and not math.isfinite(v)]
    print("\n" + full_table(result))
    if bad:
        print(f"non-finite results: {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
