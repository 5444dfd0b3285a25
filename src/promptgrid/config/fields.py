"""A config key is declared once: ``setting(...)`` is a dataclass field whose metadata holds its help text and
what values it allows. Three readers share that declaration: :func:`check_settings` (run by every section's
``__post_init__``, so a bad value fails naming its key), the JSON schema (:mod:`promptgrid.config.schema`) and
``config/README.md`` (:mod:`promptgrid.config.docs`).

The constraints a ``setting`` takes (``each`` holds the same ones for every list item or mapping value):

- ``choices``: the allowed values, a tuple or :class:`Names` (a registry's names, read when checked, so a
  study's plugins count); ``what`` names them in messages ("unknown backbone kind 'rnn'; choose one of ...");
- ``ge`` / ``gt`` / ``le`` / ``lt``: numeric bounds; ``pattern`` (a full match) with ``rule`` in words;
- ``min_items`` / ``max_items`` / ``unique``: a list's (or mapping's) length, and no value twice;
- ``keys``: a pattern every mapping key must match;
- ``defaults_for``: a section class whose keys this mapping holds, as defaults for every such section
  (``task_defaults``).

A key renamed after studies used it is listed in its class's ``RENAMED`` (old -> new): the loader reads the old
name as the new one with a warning, the schema and the docs mark it deprecated.

Types come from the annotations (``list[str]``, ``dict[str, BackboneConfig]``, ``Optional[int]``): the loader
(:mod:`promptgrid.config.study`) checks them, the schema states them.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Mapping

from promptgrid.errors import InputError

#: what names a backbone, a task, a study or an adapter's backbone may have
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
NAME_RULE = "a name of letters, digits, '_', '.' or '-', starting with a letter or digit"


class ConfigError(InputError):
    """A config value is wrong; the message starts with the key path. An :class:`InputError` (so a
    ``ValueError``): the command exits 2."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


@dataclass(frozen=True, eq=False)
class Names:
    """Allowed values that a registry (:mod:`promptgrid.registry`) holds, plus old spellings still accepted."""

    what: str  # "data source": in messages, and snake_cased the schema's ``$defs`` entry
    registry: Any
    renamed: Mapping = field(default_factory=dict)  # old spelling -> the name it means now

    def values(self) -> list:
        specs = sorted(self.registry.values(), key=lambda s: (getattr(s, "order", 0), s.name))
        return [s.name for s in specs] + list(self.renamed)

    def resolve(self, value):
        """The current name for an old spelling; anything else unchanged."""
        return self.renamed.get(value, value) if isinstance(value, str) else value

    @property
    def ref(self) -> str:
        return self.what.replace(" ", "_")


_CONSTRAINTS = ("choices", "what", "ge", "gt", "le", "lt", "pattern", "rule", "min_items", "max_items", "unique",
                "keys", "each", "defaults_for")


def setting(default=MISSING, *, help: str = "", default_factory=MISSING, default_doc: str = "", **constraints):
    """A config key: its default, ``help`` (one line for config/README.md and the schema's description),
    ``default_doc`` (the default in words, where a factory computes it) and its constraints (module docstring)."""
    unknown = set(constraints) - set(_CONSTRAINTS)
    if unknown:
        raise TypeError(f"setting() got unknown constraints {sorted(unknown)}")
    meta = {"help": help, **({"default_doc": default_doc} if default_doc else {}),
            **{k: v for k, v in constraints.items() if v is not None}}
    return field(default=default, default_factory=default_factory, metadata=meta)


def unoptional(tp):
    """``X`` for an annotation ``Optional[X]``, else ``tp``."""
    if typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def allowed(choices) -> list:
    """The values ``choices`` (a tuple or :class:`Names`) allows now."""
    return choices.values() if isinstance(choices, Names) else list(choices)


def _count(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def check_value(value, meta, key: str) -> None:
    """Raise ConfigError at ``key`` if ``value`` breaks the constraints in ``meta`` (None passes: Optional)."""
    if value is None:
        return
    if "choices" in meta:
        names = allowed(meta["choices"])
        if value not in names:
            what = meta.get("what") or (meta["choices"].what if isinstance(meta["choices"], Names) else "")
            raise ConfigError(key, f"unknown {what} {value!r}; choose one of {names}" if what
                              else f"must be one of {names}, got {value!r}")
    for bound, op, ok in (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
                          ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)):
        if bound in meta and not ok(value, meta[bound]):
            raise ConfigError(key, f"must be {op} {meta[bound]}")
    if "pattern" in meta and not (isinstance(value, str) and re.fullmatch(meta["pattern"], value)):
        raise ConfigError(key, f"must be {meta.get('rule') or 'a string matching ' + meta['pattern']}, got {value!r}")
    if isinstance(value, (list, dict)):
        if len(value) < meta.get("min_items", 0):
            raise ConfigError(key, f"needs at least {_count(meta['min_items'])}")
        if "max_items" in meta and len(value) > meta["max_items"]:
            raise ConfigError(key, f"takes at most {_count(meta['max_items'])}")
        items = enumerate(value) if isinstance(value, list) else value.items()
        for k, item in items:
            sub = f"{key}[{k}]" if isinstance(value, list) else f"{key}.{k}"
            if isinstance(value, dict) and "keys" in meta and not re.fullmatch(meta["keys"], str(k)):
                raise ConfigError(sub, f"{k!r} is not {NAME_RULE if meta['keys'] == NAME_PATTERN else meta['keys']}")
            check_value(item, meta.get("each", {}), sub)
        if meta.get("unique") and isinstance(value, list):
            seen = set()
            for item in value:
                if item in seen:
                    raise ConfigError(key, f"lists {item!r} twice")
                seen.add(item)


def resolve(value, meta):
    """``value`` with old spellings of registered names (:attr:`Names.renamed`) replaced by their current ones."""
    choices, each = meta.get("choices"), meta.get("each", {}).get("choices")
    if isinstance(choices, Names):
        return choices.resolve(value)
    if isinstance(each, Names) and isinstance(value, list):
        return [each.resolve(v) for v in value]
    return value


def check_settings(section) -> None:
    """Resolve old spellings in, then check, every field of a config dataclass against its ``setting``."""
    for f in dataclasses.fields(section):
        value = resolve(getattr(section, f.name), f.metadata)
        setattr(section, f.name, value)
        check_value(value, f.metadata, f.name)


class Section:
    """Base of the config dataclasses: construction checks each setting's declaration, then :meth:`check`."""

    def __post_init__(self):
        check_settings(self)
        self.check()

    def check(self) -> None:
        """Checks across keys, which no single declaration can say."""
