"""The JSON schema of a study config, generated from the typed config: the dataclasses' annotations give the
types, their ``setting`` declarations (:mod:`promptgrid.config.fields`) the help texts and allowed values, and
the registries the names (data sources, transfer methods and each one's ``transfer.<method>`` section, similarity
metrics, and whatever else a section declares with :class:`~promptgrid.config.fields.Names`).

- At DAG build, :func:`schema_errors` checks the raw config against :func:`config_schema` built then, from the
  registries as loaded: a study's plugins (their methods, metrics, sources) are in it.
- ``workflow/schemas/config.schema.yaml`` is the same schema over the built-in registries (:func:`schema_text`),
  committed for the tools that read a schema file: Snakemake's ``snakemake.utils.validate`` (it takes a path),
  the workflow catalog and editors. ``tests/config/test_config.py`` regenerates it in a fresh interpreter and fails
  when the file differs, so it cannot drift.

The schema has no ``default`` keywords: Snakemake's ``validate`` writes schema defaults into the config, and a
task's defaults written there would override ``task_defaults``. The defaults are in ``config/README.md``.
"""
from __future__ import annotations

import dataclasses
import typing

from promptgrid.config.fields import Names, allowed, unoptional
from promptgrid.config.sections import RETIRED_KEYS, TransferConfig
from promptgrid.config.study import StudyConfig
from promptgrid.registry import METHODS

#: where the generated schema is committed, relative to the repository root
SCHEMA_FILE = "workflow/schemas/config.schema.yaml"
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def config_schema() -> dict:
    """The JSON schema (draft 2020-12) of a study config, with the names the registries hold now."""
    defs = {}
    body = _object(StudyConfig, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "promptgrid study config",
            "description": "One study: backbones, tasks, the source x target grid, prompt and training settings, "
                           "seeds, transfer methods and similarity metrics. Generated from promptgrid.config; "
                           "every key is described in config/README.md.",
            **body, "$defs": dict(sorted(defs.items()))}


def schema_text() -> str:
    """``workflow/schemas/config.schema.yaml``: :func:`config_schema` as YAML, with a header saying how it is made."""
    import yaml

    head = ("# Generated from the typed config (src/promptgrid/config) and the built-in registries: do not edit.\n"
            "# Regenerate (with config/README.md): see promptgrid.config.docs.\n"
            "# tests/config/test_config.py fails when this file differs from what promptgrid generates.\n")

    class Dumper(yaml.SafeDumper):  # mappings in block style, lists of plain values on one line, no anchors
        def ignore_aliases(self, data):
            return True

    Dumper.add_representer(list, lambda d, data: d.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=not any(isinstance(v, (dict, list)) for v in data)))
    return head + yaml.dump(config_schema(), Dumper=Dumper, sort_keys=False, width=110, default_flow_style=False,
                            allow_unicode=True)


def _object(cls, defs: dict, required: bool = True) -> dict:
    """A config dataclass as a closed JSON object: each field, and each old key name it still reads (deprecated)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    props = {f.name: field_schema(hints[f.name], f.metadata, defs) for f in fields}
    for old, new in getattr(cls, "RENAMED", {}).items():
        props[old] = {"description": f"deprecated: the old name of {new} (read as {new}, with a warning)",
                      **{k: v for k, v in props[new].items() if k != "description"}, "deprecated": True}
    out = {"type": "object", "additionalProperties": False}
    need = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required and need:
        out["required"] = need
    return {**out, "properties": props}


def _transfer(defs: dict) -> dict:
    """``transfer``: the method list, and each registered method's typed section (its MethodSpec's ``config``)."""
    props = {"methods": field_schema(list[str], TransferConfig.METHODS_SETTING.metadata, defs)}
    for spec in METHODS.ordered():
        if spec.config is not None:
            props[spec.name] = {"description": f"settings of the {spec.name} method", **_object(spec.config, defs)}
    return {"type": "object", "additionalProperties": False, "properties": props}


def _type(tp, defs: dict) -> dict:
    """The JSON type of an annotation (``list[str]``, ``dict[str, BackboneConfig]``, a section dataclass, ...)."""
    if tp is TransferConfig:
        return _transfer(defs)
    if dataclasses.is_dataclass(tp):
        return _object(tp, defs)
    origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
    out = {"type": _JSON_TYPES[origin]} if origin in _JSON_TYPES else {}
    if origin is list and args:
        out["items"] = _type(args[0], defs)
    if origin is dict and args:
        out["additionalProperties"] = _type(args[1], defs)
    return out


def _constrain(s: dict, meta, defs: dict) -> dict:
    """``s`` with the constraints of a ``setting`` declaration."""
    if "choices" in meta:
        choices = meta["choices"]
        if isinstance(choices, Names):
            defs[choices.ref] = {"description": f"a registered {choices.what}", "enum": allowed(choices)}
            s = {"$ref": f"#/$defs/{choices.ref}"}
        else:
            s = {"enum": allowed(choices)}
    s = dict(s)
    for key, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
        if key in meta:
            s[word] = meta[key]
    if "pattern" in meta:
        s["pattern"] = f"^(?:{meta['pattern']})$"
    many = "Properties" if s.get("type") == "object" else "Items"
    if "min_items" in meta:
        s[f"min{many}"] = meta["min_items"]
    if "max_items" in meta:
        s[f"max{many}"] = meta["max_items"]
    if meta.get("unique"):
        s["uniqueItems"] = True
    if "keys" in meta:
        s["propertyNames"] = {"pattern": f"^(?:{meta['keys']})$"}
    if "each" in meta:
        part = "items" if s.get("type") == "array" else "additionalProperties"
        s[part] = _constrain(s.get(part, {}), meta["each"], defs)
    return s


def field_schema(tp, meta, defs: dict) -> dict:
    """One config key: its type, constraints and description."""
    inner = unoptional(tp)
    if "defaults_for" in meta:
        s = _object(meta["defaults_for"], defs, required=False)
    else:
        s = _constrain(_type(inner, defs), meta, defs)
    if inner is not tp:  # Optional: null allowed
        if "enum" in s:
            s["enum"] = s["enum"] + [None]
        elif "type" in s:
            s["type"] = [s["type"], "null"]
        else:
            s = {"anyOf": [s, {"type": "null"}]}
    return {"description": meta["help"], **s} if meta.get("help") else s


def schema_errors(raw: dict) -> list:
    """Check ``raw`` against :func:`config_schema` (the registries as loaded now, plugins included); each error reads
    "config key 'a.b': message". The committed workflow/schemas/config.schema.yaml is the built-in snapshot of the
    same schema, kept equal to it by a test."""
    import jsonschema

    errors = [f"config key '{section}.{key}': is no longer a setting: {instead}"
              for (section, key), instead in RETIRED_KEYS.items()
              if isinstance(raw.get(section), dict) and key in raw[section]]
    if errors:
        return errors
    validator = jsonschema.Draft202012Validator(config_schema())
    for err in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        props = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        if err.validator == "additionalProperties" and props:
            extra = sorted(set(err.instance) - set(props))
            if extra:
                key = f"{path}.{extra[0]}" if err.absolute_path else extra[0]
                known = sorted(k for k, v in props.items() if not v.get("deprecated"))
                errors.append(f"config key '{key}': unknown key (allowed here: {known})")
                continue
        errors.append(f"config key '{path}': {err.message}")
    return errors
