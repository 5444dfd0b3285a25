"""The ``promptgrid`` command itself: --version, help text, exit codes (2 bad input, 3 missing resource, 1 a bug
with its traceback), --debug / PROMPTGRID_DEBUG, and --config on every verb. In-process (``main([...])``)
except the one test of the installed script."""
import importlib.metadata
import re
import subprocess

import pytest

import promptgrid
from promptgrid import cli
from promptgrid.cli import DEBUG_HINT, build_parser, exit_code, main

TRACEBACK = "Traceback (most recent call last)"
SPHINX = re.compile(r":(mod|class|func|meth|attr|data|exc|obj):|``")


@pytest.fixture
def bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("study: 5\n")
    return path


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv("PROMPTGRID_DEBUG", raising=False)
    monkeypatch.delenv("PROMPTGRID_THREADS", raising=False)


def test_version_of_the_installed_command(repo, venv_env):
    out = subprocess.run(["promptgrid", "--version"], cwd=repo, env=venv_env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"promptgrid {importlib.metadata.version('promptgrid')}\n"


def test_version_falls_back_to_the_package(monkeypatch, capsys):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"promptgrid {promptgrid.__version__}\n"


def test_help_is_plain_text_with_exit_codes():
    parser = build_parser()
    text = parser.format_help()
    assert not SPHINX.search(text), SPHINX.search(text)
    for line in ("1  internal error", "2  bad input", "3  missing resource", "PROMPTGRID_DEBUG=1", "--version",
                 "--debug"):
        assert line in text
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    for name, sub in verbs.items():
        assert not SPHINX.search(sub.format_help()), name
        if name != "sources":  # every verb that reads a study takes it as --config
            assert "--config CONFIG" in sub.format_help(), name


def test_bad_config_exits_2_with_one_line(bad_config, capsys):
    assert main(["check", "--config", str(bad_config)]) == 2
    err = capsys.readouterr().err
    assert "promptgrid check: error: config key 'study': expected str, got int 5\n" in err
    assert DEBUG_HINT in err and TRACEBACK not in err


def test_config_that_does_not_parse_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("study: [unclosed\n")
    assert main(["check", "--config", str(path)]) == 2
    assert f"promptgrid check: error: config file {path} is not valid YAML" in capsys.readouterr().err


def test_missing_config_file_exits_3(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    assert main(["check", "--config", str(missing)]) == 3
    err = capsys.readouterr().err
    assert f"promptgrid check: error: config file {missing} does not exist" in err
    assert DEBUG_HINT in err and TRACEBACK not in err


def test_unknown_task_on_the_command_line_exits_2(repo, capsys):
    assert main(["prepare", "--config", str(repo / "config.yaml"), "--task", "nope"]) == 2
    assert "promptgrid prepare: error: unknown task 'nope'; the config defines [" in capsys.readouterr().err


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: an illegal memory access was encountered"),
                                   KeyError("n_layers"), ValueError("operands could not be broadcast")])
def test_internal_error_exits_1_with_its_traceback(repo, monkeypatch, capsys, error):
    import promptgrid.pipeline.tables as tables

    def broken(study):
        raise error

    monkeypatch.setattr(tables, "summarize", broken)
    assert main(["summarize", "--config", str(repo / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert TRACEBACK in err and "in broken" in err  # the frame that raised
    assert f"promptgrid summarize: internal error: {type(error).__name__}: {error}" in err
    assert DEBUG_HINT not in err


@pytest.mark.parametrize("how", ["flag before", "flag after", "env"])
def test_debug_prints_the_traceback_of_bad_input(bad_config, monkeypatch, capsys, how):
    argv = ["check", "--config", str(bad_config)]
    if how == "flag before":
        argv = ["--debug", *argv]
    elif how == "flag after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("PROMPTGRID_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert TRACEBACK in err and "ConfigError: config key 'study'" in err
    assert err.rstrip().endswith("promptgrid check: error: config key 'study': expected str, got int 5")
    assert DEBUG_HINT not in err


def test_debug_env_off_values(bad_config, monkeypatch, capsys):
    for value in ("0", "false", ""):
        monkeypatch.setenv("PROMPTGRID_DEBUG", value)
        assert main(["check", "--config", str(bad_config)]) == 2
        assert TRACEBACK not in capsys.readouterr().err, value


def test_usage_errors_exit_2(repo, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["prepare", "--config", str(repo / "config.yaml")])  # no --task
    assert stop.value.code == 2
    assert "the following arguments are required: --task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["check"])
    assert stop.value.code == 2
    assert "required: --config" in capsys.readouterr().err


def test_bad_thread_count_exits_2(repo, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTGRID_THREADS", "four")
    assert main(["check", "--config", str(repo / "config.yaml")]) == 2
    assert "PROMPTGRID_THREADS='four'" in capsys.readouterr().err


def test_check_takes_config_and_still_the_old_positional(repo, capsys):
    config = str(repo / "config.yaml")
    assert main(["check", "--config", config]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("study default:") and "deprecated" not in out.err
    assert main(["check", config]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("study default:")
    assert f"the positional config is deprecated; use: promptgrid check --config {config}" in out.err
    with pytest.raises(SystemExit) as stop:
        main(["check", "--config", config, "other.yaml"])
    assert stop.value.code == 2


def test_exit_code_of_each_error_type():
    from promptgrid.config import ConfigError
    from promptgrid.data import DataError, DataNotFound
    from promptgrid.data.artifacts import SourceUnavailable
    from promptgrid.errors import InputError, MissingResource, UnknownName
    from promptgrid.models.backbones import BackboneError, BackboneNotFound
    from promptgrid.objectives import ObjectiveError
    from promptgrid.pipeline.bundle import BundleError
    from promptgrid.pipeline.dag import SchemaError

    assert [exit_code(e) for e in (
        InputError("x"), ConfigError("k", "x"), DataError("x"), ObjectiveError("x"), BundleError("x"),
        BackboneError("x"), UnknownName("x"), SchemaError("x"),
    )] == [2] * 8
    missing = (MissingResource("x"), FileNotFoundError("x"), BackboneNotFound("x"), DataNotFound("x"),
               SourceUnavailable("x"))
    assert [exit_code(e) for e in missing] == [3] * 5
    assert [exit_code(e) for e in (KeyError("x"), ValueError("x"), RuntimeError("x"), TypeError("x"))] == [1] * 4
    # the refined errors stay what callers caught before
    assert isinstance(UnknownName("x"), KeyError) and str(UnknownName("unknown 'a'")) == "unknown 'a'"
    assert isinstance(BackboneNotFound("x"), BackboneError)
    assert cli.version() == importlib.metadata.version("promptgrid")
