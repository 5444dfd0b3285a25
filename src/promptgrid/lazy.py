"""Third-party modules imported on first use.

Snakemake builds the DAG by importing the registries (every method, metric, figure, data source and predictor
module registers itself), and the catalog lints the workflow where only Snakemake is installed. Modules that
the registries import name numpy and pandas with ``np = lazy_module("numpy")``: nothing is imported until an
attribute is read, so building the DAG needs neither (tests/workflow/test_module.py blocks them and builds it).
"""
from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for the module ``name`` and imports it when the first attribute is read."""

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads find the attribute without coming back here
        return getattr(module, attr)


def lazy_module(name: str) -> types.ModuleType:
    return LazyModule(name)
