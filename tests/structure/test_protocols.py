"""The contracts in promptgrid.protocols hold for every implementation: each member exists, with the protocol's
parameters in the protocol's order (an implementation may add trailing parameters with defaults)."""
import functools
import inspect

import pytest

from promptgrid import protocols
from promptgrid.models import backbones
from promptgrid.objectives.classification import ClassificationObjective
from promptgrid.objectives.regression import RegressionObjective
from promptgrid.objectives.tagging import TaggingObjective
from promptgrid.objectives.text import TextObjective
from promptgrid.pipeline.context import Study
from promptgrid.registry import METHODS, SOURCES


def members(proto) -> dict:
    """name -> the protocol's function (property getter unwrapped), or None for a data member."""
    out = {name: None for name in getattr(proto, "__annotations__", {})}
    for name, value in vars(proto).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, property):
            out[name] = value.fget
        elif inspect.isfunction(value):
            out[name] = value
    return out


def params(func) -> list:
    return [p.name for p in inspect.signature(func).parameters.values()][1:]  # without self


def violations(cls, proto, instance_attrs=()) -> list:
    bad = []
    for name, want in members(proto).items():
        have = inspect.getattr_static(cls, name, None)
        if have is None:
            if name not in instance_attrs:
                bad.append(f"{cls.__name__} lacks {name}")
            continue
        if want is None:
            continue
        if isinstance(have, functools.cached_property):
            have = have.func
        have = have.fget if isinstance(have, property) else have
        got = params(have)
        if got[:len(params(want))] != params(want):
            bad.append(f"{cls.__name__}.{name}{tuple(got)} does not start with {tuple(params(want))}")
        extra = list(inspect.signature(have).parameters.values())[1 + len(params(want)):]
        if any(p.default is inspect.Parameter.empty for p in extra):
            bad.append(f"{cls.__name__}.{name}: extra parameters without defaults")
    return bad


@pytest.mark.parametrize("cls", [ClassificationObjective, RegressionObjective, TextObjective, TaggingObjective])
def test_every_objective_is_an_objective(cls):
    assert violations(cls, protocols.Objective) == []


def test_the_study_is_a_method_context():
    assert violations(Study, protocols.MethodContext, instance_attrs=("cfg",)) == []
    assert "self.cfg" in inspect.getsource(Study.__init__)


@pytest.mark.parametrize("cls", [c for c in vars(backbones).values()
                                 if isinstance(c, type) and issubclass(c, backbones.Backbone)])
def test_every_backbone_kind_is_a_predictor(cls):
    assert violations(cls, protocols.Predictor) == []


def test_every_source_reader_takes_the_contract():
    want = params(protocols.SourceReader.__call__)
    for spec in SOURCES.values():
        got = [p.name for p in inspect.signature(spec.read).parameters.values()]
        assert len(got) >= len(want), spec.name


def test_methods_only_ask_the_context_for_what_it_promises():
    import ast

    allowed = set(members(protocols.MethodContext))
    for spec in METHODS.values():
        for func in (spec.plan, spec.evaluate):
            if func is None:
                continue
            tree = ast.parse(inspect.getsource(inspect.getmodule(func)))
            used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name) and n.value.id == "ctx"}
            assert used <= allowed, (spec.name, used - allowed)


def test_the_checker_catches_a_broken_implementation():
    class Broken:
        def encode(self, frame):
            ...

        def forward(self, prompts, idx, split):  # parameters out of order
            ...

        def kd(self, student_out, teacher_out, panda_cfg, weight):  # a required extra
            ...

    bad = violations(Broken, protocols.Objective)
    assert any("forward" in b for b in bad) and any("kd" in b for b in bad) and any("lacks score" in b for b in bad)
