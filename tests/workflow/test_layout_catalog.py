"""The repository's layout: rule files named after the pipeline modules they call, no orphan report captions,
and what the Snakemake workflow catalog (and snakedeploy) read: workflow/Snakefile, config/config.yaml,
config/README.md, LICENSE and .snakemake-workflow-catalog.yml, checked as the catalog's generator reads them
(it needs GitHub, so it cannot run here)."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from promptgrid.cli import VERBS

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "workflow" / "rules"
PIPELINE = REPO / "src" / "promptgrid" / "pipeline"
#: a rule's shell: ``promptgrid <verb> --config ...``
VERB = re.compile(r"\bpromptgrid ([a-z][a-z-]*) --")


def rule_files() -> list:
    return sorted(p for p in RULES.glob("*.smk") if p.name != "common.smk")


def verbs_of(text: str) -> list:
    return VERB.findall(text)


def module_of(verb: str) -> str:
    return VERBS[verb][0]


# ---------------------------------------------------------------- rule files <-> pipeline modules
@pytest.mark.parametrize("smk", rule_files(), ids=lambda p: p.name)
def test_rule_file_is_named_after_the_pipeline_module_it_calls(smk):
    modules = {p.stem for p in PIPELINE.glob("*.py")}
    assert smk.stem in modules, f"{smk.name}: no src/promptgrid/pipeline/{smk.stem}.py"
    verbs = verbs_of(smk.read_text())
    assert verbs, f"{smk.name} runs no promptgrid verb"
    unknown = sorted(set(verbs) - set(VERBS))
    assert not unknown, f"{smk.name}: verbs not in promptgrid.cli.VERBS: {unknown}"
    elsewhere = {v: module_of(v) for v in verbs if module_of(v) != smk.stem}
    assert not elsewhere, f"{smk.name} runs verbs of other pipeline modules (move the rules): {elsewhere}"


def test_every_rule_file_is_included_once_and_every_include_exists():
    text = (REPO / "workflow" / "Snakefile").read_text()
    included = re.findall(r'^include:\s*"rules/([^"]+)"', text, re.M)
    assert sorted(included) == sorted(p.name for p in RULES.glob("*.smk")), included
    assert included[0] == "common.smk", "common.smk defines W, R and ENV: it comes first"


# ---------------------------------------------------------------- report captions
def report_references() -> list:
    """Every .rst path the Snakefiles and rule files name (an f-string's {...} matches any name)."""
    refs = []
    files = [REPO / "Snakefile", REPO / "workflow" / "Snakefile", *RULES.glob("*.smk")]
    for f in files:
        for m in re.finditer(r'["\']([^"\']*\.rst)["\']', f.read_text()):
            path = (f.parent / m.group(1)).resolve() if not m.group(1).startswith("/") else Path(m.group(1))
            pattern = re.escape(str(path))
            refs.append((f.name, re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", pattern) + r"\Z")))
    return refs


def test_every_report_file_is_referenced_by_a_rule_or_the_snakefile():
    refs = report_references()
    orphans = sorted(p.name for p in (REPO / "workflow" / "report").iterdir()
                     if not any(r.match(str(p.resolve())) for _, r in refs))
    assert not orphans, f"workflow/report files no rule or Snakefile uses: {orphans}"
    for where, r in refs:
        assert any(r.match(str(p.resolve())) for p in (REPO / "workflow" / "report").iterdir()), \
            f"{where} names a caption that does not exist: {r.pattern}"


# ---------------------------------------------------------------- what the workflow catalog reads
DEPLOYMENT = {"conda", "apptainer", "apptainer+conda", "singularity", "singularity+conda"}


def catalog_errors(repo: Path) -> list:
    """What keeps ``repo`` out of the catalog's "standardized usage" area, or makes its page wrong, as the
    generator (scripts/generate-catalog.py of snakemake/snakemake-workflow-catalog) and its page templates
    read the repository: [] when nothing does. Linting (``snakemake --lint`` at the root) and formatting
    (snakefmt on workflow/Snakefile and workflow/rules/*.smk) are tests of their own."""
    errors = []
    readme = (repo / "README.md").read_text().lower() if (repo / "README.md").exists() else ""
    if "snakemake" not in readme or "workflow" not in readme:
        errors.append("README.md must contain the words 'snakemake' and 'workflow'")
    # a workflow/ folder makes the generator look for workflow/Snakefile only
    if not (repo / "workflow" / "Snakefile").is_file():
        errors.append("no workflow/Snakefile")
    rules = repo / "workflow" / "rules"
    if rules.is_dir() and not any(p.suffix == ".smk" for p in rules.iterdir() if p.is_file()):
        errors.append("workflow/rules holds no .smk file")
    if not (repo / "config" / "README.md").is_file():
        errors.append("no config/README.md (the catalog's configuration section)")
    if not (repo / "config" / "config.yaml").is_file():
        errors.append("no config/config.yaml (what snakedeploy copies and the deployed workflow reads)")
    if not (repo / "LICENSE").is_file():
        errors.append("no LICENSE (the page's licence badge)")
    settings_file = repo / ".snakemake-workflow-catalog.yml"
    if not settings_file.is_file():
        return errors + ["no .snakemake-workflow-catalog.yml"]
    try:
        settings = yaml.safe_load(settings_file.read_text())
    except yaml.YAMLError as err:
        return errors + [f".snakemake-workflow-catalog.yml does not parse: {err}"]
    if not isinstance(settings, dict) or not isinstance(settings.get("usage"), dict):
        return errors + [".snakemake-workflow-catalog.yml: a mapping with a 'usage' mapping"]
    usage = settings["usage"]
    if set(usage) - {"mandatory-flags", "software-stack-deployment", "report"}:
        errors.append(f"usage: unknown keys {sorted(set(usage) - {'mandatory-flags', 'software-stack-deployment', 'report'})}")
    flags = usage.get("mandatory-flags")
    if flags is not None:
        if not isinstance(flags, dict) or set(flags) - {"desc", "flags"}:
            errors.append("usage.mandatory-flags: a mapping of desc and flags")
        else:
            if not isinstance(flags.get("desc"), str) or not flags["desc"].strip():
                errors.append("usage.mandatory-flags.desc: a sentence")
            f = flags.get("flags")
            if not (isinstance(f, str) or (isinstance(f, list) and all(isinstance(x, str) for x in f))):
                errors.append("usage.mandatory-flags.flags: a string or a list of strings")
    deployment = usage.get("software-stack-deployment")
    if not isinstance(deployment, dict) or not deployment:
        errors.append("usage.software-stack-deployment: a mapping of methods to true/false")
    else:
        if set(deployment) - DEPLOYMENT:
            errors.append(f"usage.software-stack-deployment: unknown methods {sorted(set(deployment) - DEPLOYMENT)}")
        if not all(isinstance(v, bool) for v in deployment.values()) or not any(deployment.values()):
            errors.append("usage.software-stack-deployment: booleans, at least one true")
    snakefiles = [repo / "workflow" / "Snakefile", *rules.glob("*.smk")] if rules.is_dir() else []
    text = "\n".join(p.read_text() for p in snakefiles if p.is_file())
    if isinstance(deployment, dict) and deployment.get("conda"):
        envs = re.findall(r"^\s*ENV\s*=\s*\"([^\"]+)\"", text, re.M)
        if not re.search(r"^\s*conda:", text, re.M) or not envs:
            errors.append("conda: true, but no rule names a conda environment")
        elif not all((rules / e).resolve().is_file() for e in envs):
            errors.append(f"a rule's conda environment does not exist: {envs}")
    if isinstance(deployment, dict) and any(deployment.get(k) for k in DEPLOYMENT - {"conda"}):
        if not re.search(r"^\s*container(ized)?:", text, re.M):
            errors.append("apptainer/singularity claimed, but no container: directive")
    report = usage.get("report", False)
    if not isinstance(report, bool):
        errors.append("usage.report: true or false")
    elif report:
        m = re.search(r'^report:\s*"([^"]+)"', (repo / "workflow" / "Snakefile").read_text(), re.M) \
            if (repo / "workflow" / "Snakefile").is_file() else None
        if not m or not (repo / "workflow" / m.group(1)).is_file():
            errors.append("usage.report: true, but workflow/Snakefile has no report: with an existing file")
    schema = repo / "workflow" / "schemas" / "config.schema.yaml"  # the page's parameter table
    if schema.exists() and not isinstance(yaml.safe_load(schema.read_text()).get("properties"), dict):
        errors.append("workflow/schemas/config.schema.yaml: no properties for the catalog's parameter table")
    return errors


def test_the_catalog_finds_nothing_wrong():
    assert catalog_errors(REPO) == []


def test_the_catalog_check_fails_on_a_broken_repository(tmp_path):
    broken = tmp_path / "repo"
    (broken / "workflow" / "rules").mkdir(parents=True)
    (broken / "workflow" / "rules" / "a.py").write_text("")
    (broken / "README.md").write_text("A Snakemake pipeline.\n")
    (broken / ".snakemake-workflow-catalog.yml").write_text(
        "usage:\n  mandatory-flags:\n    flags: 3\n  software-stack-deployment:\n    docker: true\n  report: yes please\n")
    errors = "\n".join(catalog_errors(broken))
    for expected in ("'workflow'", "no workflow/Snakefile", "no .smk", "config/README.md", "config/config.yaml",
                     "LICENSE", "mandatory-flags.desc", "mandatory-flags.flags", "unknown methods ['docker']",
                     "usage.report"):
        assert expected in errors, expected


def test_config_yaml_for_snakedeploy_is_the_root_config():
    """config/config.yaml is the file (snakedeploy copies config/, and a link out of it would dangle there or be
    copied empty); the root config.yaml links to it: one file, so the two can never differ, and a study run from
    either path resolves to the same config file (results/<study>/ records one origin)."""
    real, linked = REPO / "config" / "config.yaml", REPO / "config.yaml"
    assert real.is_file() and not real.is_symlink() and real.stat().st_size > 0
    assert linked.is_symlink() and Path(linked.readlink()) == Path("config/config.yaml"), "config.yaml -> config/config.yaml"
    assert linked.resolve() == real.resolve()


def test_license_is_mit_and_pyproject_says_so():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the promptgrid authors" in text
    project = (REPO / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^license = "MIT"$', project, re.M) and re.search(r'^license-files = \["LICENSE"\]$', project, re.M)


# ---------------------------------------------------------------- workflow/Snakefile on its own
def dry_run(cwd, env, *args):
    out = subprocess.run(["snakemake", "-n", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    text = out.stdout + out.stderr
    assert "Job stats:" in text, text[-2000:]
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)$", text.split("Job stats:", 1)[1], re.M)}


@pytest.mark.slow
def test_workflow_snakefile_alone_schedules_the_default_study(repo, venv_env, tmp_path):
    """What the catalog and snakedeploy run: ``snakemake -s workflow/Snakefile`` with config/config.yaml,
    given or found; the same jobs as the root Snakefile."""
    results = f"results_dir={tmp_path}"
    root = dry_run(repo, venv_env, "--config", results)
    given = dry_run(repo, venv_env, "-s", "workflow/Snakefile", "--configfile", "config/config.yaml", "--config", results)
    found = dry_run(repo, venv_env, "-s", "workflow/Snakefile", "--config", results)
    assert root == given == found and root["total"] > 30, (root, given, found)
