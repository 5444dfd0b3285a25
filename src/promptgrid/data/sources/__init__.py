"""Data sources, one file each; every module registers a :class:`~promptgrid.registry.SourceSpec` on import.

A source owns its package, version, sha256 and licence (its :class:`~promptgrid.registry.Artifact`), the path
of the data inside the package, the parsing, and the tasks it yields. Adding a source is adding a file here
(or a study's ``plugins:`` file); nothing else changes. ``common`` holds the readers' shared helpers.
"""
HELPERS = ("common",)
