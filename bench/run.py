"""Run the promptgrid benchmarks, write bench/results.json and refresh the tables in bench/README.md.

    python bench/run.py [--quick] [NAME ...]

NAME picks benchmarks (default: all). Results of benchmarks not run are kept from the last run.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

NAMES = ["train_throughput", "precision", "efficiency", "zeroshot", "bank", "deep", "overhead", "dag", "levers",
         "scaling"]
RESULTS, README = HERE / "results.json", HERE / "README.md"


def machine() -> dict:
    """The CPU with its family, model and numeric flags (promptgrid.storage.hardware): a VM's model name often
    omits the generation, which decides the GEMM rates and whether bf16 is fast (section 1c)."""
    from promptgrid.storage.hardware import cpu_info, cpu_label

    return {"cpu": cpu_label(cpu_info()), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def goals(b: dict) -> str:
    rows = []
    def g(name):
        return (b.get(name) or {}).get("goal") or {}
    if g("train_throughput"):
        t = b["train_throughput"]["variants"]
        n = len(b["train_throughput"].get("tasks", {})) or 1
        tt = g("train_throughput")
        # bf16's dev accuracy is judged on the paired runs of `precision` when they exist (2 seeds per task
        # here cannot tell a 2-point loss from noise): non-inferior = 95% CI of bf16 - fp32 above -1 point,
        # and fp32 itself within 2 points of PEFT
        p = b.get("precision") or {}
        p = p if "diff_ci" in p else {}  # paired accuracy runs only on CPUs with fast bf16
        bf16_equal = (p["diff_ci"][0] > -1 and t["pg128"]["dev_mean"] >= t["peft"]["dev_mean"] - 2) if p \
            else tt.get("met_bf16")
        bf16_met = "pg128bf16" in t and t["pg128bf16"]["speedup"] >= 3 and bf16_equal
        how = ("met (fp32)" if tt.get("met_fp32") else
               "met with `training.precision: bf16` (opt-in); fp32 NOT met" if bf16_met else "NOT met")
        paired = (f", paired against fp32 over {p['n']} runs: {p['diff_mean']:+.1f} points (95% CI "
                  f"{p['diff_ci'][0]:+.1f} to {p['diff_ci'][1]:+.1f})" if p else "")
        bf16 = (f"; with bf16 autocast: {t['pg128bf16']['speedup']:.2f}x (dev {t['pg128bf16']['dev_mean']:.1f}"
                f"{paired})" if "pg128bf16" in t else "")
        rows.append(["training throughput vs PEFT at equal dev accuracy", ">= 3x",
                     f"same inputs (max_length 128), {n} tasks: {t['pg128']['speedup']:.2f}x "
                     f"(dev {t['pg128']['dev_mean']:.1f} vs PEFT {t['peft']['dev_mean']:.1f}){bf16}; "
                     f"study config (max_length 32): {t['pg']['speedup']:.2f}x (dev {t['pg']['dev_mean']:.1f})", how])
    if (b.get("precision") or {}).get("auto"):
        p = b["precision"]
        rows.append(["`training.precision: auto` on this CPU", "(no goal)",
                     f"resolves to {p['auto']}; bf16 takes {p['bf16_over_fp32_time']:.2f}x the time of fp32 per "
                     f"step (max_length 128)", ""])
    if (b.get("precision") or {}).get("diff_ci"):
        p = b["precision"]
        rows.append(["bf16 autocast against fp32: dev accuracy, paired runs (max_length 128)", "(no goal)",
                     f"{p['diff_mean']:+.2f} points (95% CI {p['diff_ci'][0]:+.2f} to {p['diff_ci'][1]:+.2f}, "
                     f"{p['n']} runs) at {p['speedup']:.2f}x the training speed", ""])
    if g("efficiency"):
        e = b["efficiency"]["efficiency"]
        rows.append(["achieved FLOP/s of an fp32 training step / IEEE fp32 GEMM rate", ">= 60%",
                     ", ".join(f"{k.replace('K', 'K=')}: {100 * v['vs_fp32']:.0f}%" for k, v in e.items()),
                     "met" if g("efficiency")["met"] else "NOT met"])
    if g("zeroshot"):
        rows.append(["zero-shot, one process vs one per pair", ">= 3x", f"{b['zeroshot']['speedup']:.2f}x",
                     "met" if g("zeroshot")["met"] else "NOT met"])
    if b.get("bank"):
        rows.append(["prompt bank vs sequential runs", "(no goal)",
                     ", ".join(f"K={k}: {v['speedup']:.2f}x" for k, v in b["bank"]["sizes"].items()), ""])
    if g("deep"):
        d = g("deep")
        rows.append(["deep vs input prompts: examples/s at equal dev accuracy (MiniLM, max_length 48)", ">= 1.3x",
                     f"{d['deep_speedup']:.2f}x (dev {d['dev']['deep']:.1f} vs {d['dev']['input']:.1f})",
                     "met" if d["met_kind"] else "NOT met"])
        rows.append(["deep-prompt bank vs sequential PEFT PrefixTuning (CPU)", ">= 1.5x",
                     f"{d['peft_speedup']:.2f}x at K={d['peft_K']}", "met" if d["met_peft"] else "NOT met"])
    if g("overhead") and g("overhead").get("share") is not None:
        rows.append(["per-job overhead share, default study", "<= 10%", f"{100 * g('overhead')['share']:.1f}%",
                     "met" if g("overhead")["met"] else "NOT met"])
    if g("dag"):
        rows.append(["`snakemake -n`, panda-21x9", "<= 20 s", f"{g('dag')['panda_s']:.1f} s",
                     "met" if g("dag")["met"] else "NOT met"])
    import common as C

    return C.md_table(["goal", "target", "measured (median)", ""], rows)


def under_load(load: float) -> bool:
    """A benchmark's own threads keep the 1-min load near the core count; beyond that, others were running."""
    return load > (os.cpu_count() or 1) + 0.5


def stamp(entry: dict) -> str:
    la = entry["loadavg"]
    under = " **under load**" if under_load(max(la)) else ""
    cpu = f", on {entry['cpu']}" if entry.get("cpu") else ""
    return (f"_{'quick' if entry['quick'] else 'full'} run, {entry['date']}{cpu}, {entry['seconds']:.0f} s, "
            f"1-min load average {la[0]:.1f} before / {la[1]:.1f} after{under}_")


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    return text.rstrip() + f"\n\n### {name}\n\n{block}\n"


def write_readme(results: dict) -> None:
    text = README.read_text() if README.exists() else "# promptgrid benchmarks\n"
    m = results["machine"]
    loads = [max(e["loadavg"]) for e in results["benchmarks"].values() if "loadavg" in e]
    header = (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
              f"Python {m['python']}; last run {m['date']}.")
    if loads and under_load(max(loads)):
        header += (f" **Taken under load**: the 1-min load average reached {max(loads):.1f} on {m['cores']} cores "
                   f"(other jobs were running), so absolute times are inflated and noisy; the ratios come from "
                   f"variants alternated in the same process.")
    text = replace_block(text, "machine", header)
    text = replace_block(text, "goals", goals(results["benchmarks"]))
    for name, entry in results["benchmarks"].items():
        body = entry.get("table") or f"failed: {entry.get('error', 'no result')}"
        text = replace_block(text, name, stamp(entry) + "\n\n" + body if "loadavg" in entry else body)
    README.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and steps (< 10 min on an idle machine)")
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {' '.join(NAMES)}")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r}; choose from {NAMES}")
    names = args.names or NAMES
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"benchmarks": {}}
    results["machine"] = machine()
    failed = []
    for name in NAMES:
        if name not in names:
            continue
        print(f"\n=== {name} ({'quick' if args.quick else 'full'})", flush=True)
        before, t0 = os.getloadavg()[0], time.time()
        try:
            module = importlib.import_module(name)
            out = module.run(args.quick, results["benchmarks"]) if name == "scaling" else module.run(args.quick)
        except Exception as err:  # keep going: one broken benchmark should not hide the others
            traceback.print_exc()
            out = {"error": f"{type(err).__name__}: {err}"}
            failed.append(name)
        out.update(quick=args.quick, date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpu=results["machine"]["cpu"],
                   seconds=time.time() - t0, loadavg=[before, os.getloadavg()[0]])
        results["benchmarks"][name] = out
        RESULTS.write_text(json.dumps(results, indent=1, default=str))
        write_readme(results)
        print(f"=== {name}: {out['seconds']:.0f} s", flush=True)
    print("\n" + goals(results["benchmarks"]))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
