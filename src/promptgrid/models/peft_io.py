"""Soft prompts in and out as PEFT prompt-tuning adapters.

An exported folder holds what ``peft.PeftModel.from_pretrained(base_model, folder)`` loads:

- ``adapter_config.json``: PEFT's own ``PromptTuningConfig`` (peft_type PROMPT_TUNING,
  num_virtual_tokens = L, token_dim = d, base_model_name_or_path = the backbone's ``cfg.model``),
- ``adapter_model.safetensors``: one tensor ``prompt_embeddings`` (L, d) float32, the key PEFT's
  ``save_pretrained`` writes for prompt tuning (read off a saved tiny adapter, PEFT 0.21),
- ``promptgrid.json``: promptgrid's provenance ``meta`` (PEFT ignores it).

PEFT's prompt tuning prepends the L virtual tokens to the word embeddings of the input and ones to
the attention mask, and drops any ``position_ids``, so the model sees positions 0..L+T-1 exactly as in
:meth:`promptgrid.models.backbones.Backbone.prompted_inputs`. Kinds and their PEFT task types:

- ``causal_lm`` -> CAUSAL_LM,
- ``seq2seq``   -> SEQ_2_SEQ_LM with ``num_transformer_submodules = 1`` (the prompt goes before the
  encoder input only, as in promptgrid; PEFT's default of 2 would store an extra (L, d) block for the
  decoder that its prompt-tuning forward never reads),
- ``encoder``   -> FEATURE_EXTRACTION (PEFT returns the hidden states over prompt + tokens; promptgrid's
  mean pooling over both is left to the caller),
- ``masked_lm`` -> not exportable. PEFT has no masked-LM task type, and promptgrid feeds
  ``[CLS] [MASK] P_1..P_L x..`` while every PEFT task type puts the prompt before ``[CLS]``, so no PEFT
  adapter reproduces the scores; :func:`export_peft` raises :class:`PeftExportError`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from promptgrid.storage.files import PromptFileError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
META_NAME = "promptgrid.json"
# the state-dict key PEFT saves a prompt-tuning adapter under (PeftModel.save_pretrained, PEFT 0.21)
PROMPT_KEY = "prompt_embeddings"

TASK_TYPES = {"causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "encoder": "FEATURE_EXTRACTION"}


class PeftExportError(ValueError):
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


def export_peft(prompt: torch.Tensor, backbone, out_dir, meta: dict) -> Path:
    """Write ``prompt`` (L, d) as a PEFT prompt-tuning adapter folder ``out_dir`` for ``backbone``.

    The folder is built beside ``out_dir`` and renamed into place, replacing an existing folder, so a
    killed job leaves either the old folder or the new one. ``meta`` (JSON-able provenance) goes to
    ``promptgrid.json``. Returns ``out_dir``. Raises :class:`PeftExportError` for a masked-LM backbone
    (see the module docstring), a prompt that is not (L, d), of another width than the backbone's
    embeddings, or not finite.
    """
    from peft import PromptTuningConfig
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    kind = backbone.kind
    if kind not in TASK_TYPES:
        raise PeftExportError(
            f"backbone '{backbone.name}': kind {kind!r} has no faithful PEFT prompt-tuning form (PEFT has no "
            f"masked-LM task type and puts the prompt before [CLS], promptgrid feeds [CLS] [MASK] prompt tokens); "
            f"exportable kinds: {sorted(TASK_TYPES)}")
    if prompt.dim() != 2:
        raise PeftExportError(f"a prompt is (L, d); got shape {tuple(prompt.shape)} for {out_dir}")
    L, d = prompt.shape
    if d != backbone.embed_dim:
        raise PeftExportError(f"backbone '{backbone.name}': prompt width {d} != embedding size "
                              f"{backbone.embed_dim} (exporting to {out_dir})")
    if not torch.isfinite(prompt).all():
        raise PeftExportError(f"prompt for {out_dir} holds NaN or infinite values")
    if out_dir.exists() and not out_dir.is_dir():
        raise PeftExportError(f"{out_dir} exists and is not a folder")

    model_config = getattr(backbone.model, "config", None)
    config = PromptTuningConfig(
        task_type=TASK_TYPES[kind],
        num_virtual_tokens=int(L),
        token_dim=int(d),
        num_transformer_submodules=1,
        # unused by prompt tuning; filled so the file matches what PEFT itself writes
        num_layers=_model_config_value(model_config, "num_hidden_layers", "num_layers", "n_layer"),
        num_attention_heads=_model_config_value(model_config, "num_attention_heads", "num_heads", "n_head"),
        base_model_name_or_path=backbone.cfg.model,
        revision=backbone.cfg.revision,
        inference_mode=True,
    )

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


def import_peft(adapter_dir, expect_dim: int):
    """Read a PEFT prompt-tuning adapter folder. Returns (prompt (L, d) float32, meta dict).

    ``meta`` is the ``promptgrid.json`` written by :func:`export_peft`, or for an adapter PEFT wrote
    itself ``{"peft_base_model": ..., "peft_task_type": ..., "peft_version": ...}`` from its config.
    Only ``adapter_model.safetensors`` is read; a pickled ``adapter_model.bin`` is refused, never loaded.
    For a SEQ_2_SEQ_LM adapter saved with ``num_transformer_submodules = 2`` the stored (2L, d) tensor's
    first L rows are returned: the encoder-side prompt, the only part PEFT's prompt tuning uses.
    Raises :class:`PeftAdapterError` naming the file for any problem.
    """
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
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
    if peft_type != "PROMPT_TUNING":
        raise PeftAdapterError(f"PEFT adapter config {config_path}: peft_type is {peft_type!r}, not 'PROMPT_TUNING'; "
                               f"only prompt-tuning adapters hold a soft prompt")
    n_virtual = config.get("num_virtual_tokens")
    if not isinstance(n_virtual, int) or n_virtual < 1:
        raise PeftAdapterError(f"PEFT adapter config {config_path}: num_virtual_tokens is {n_virtual!r}, "
                               f"expected a positive integer")
    n_sub = config.get("num_transformer_submodules") or 1

    weights_path = adapter_dir / WEIGHTS_NAME
    if not weights_path.exists():
        if (adapter_dir / PICKLE_WEIGHTS_NAME).exists():
            raise PeftAdapterError(f"PEFT adapter {adapter_dir / PICKLE_WEIGHTS_NAME} is a pickle; promptgrid only "
                                   f"reads {WEIGHTS_NAME} and never unpickles (re-save the adapter with "
                                   f"safe_serialization=True)")
        raise PeftAdapterError(f"PEFT adapter weights {weights_path} do not exist")
    try:
        with safe_open(str(weights_path), framework="pt") as fh:
            keys = list(fh.keys())
            if PROMPT_KEY not in keys:
                raise PeftAdapterError(f"PEFT adapter weights {weights_path} have no {PROMPT_KEY!r} tensor "
                                       f"(keys: {keys})")
            stored = fh.get_tensor(PROMPT_KEY)
    except PeftAdapterError:
        raise
    except Exception as err:  # safetensors raises its own error types for truncated headers
        raise PeftAdapterError(f"PEFT adapter weights {weights_path} are corrupt or truncated: {err}") from None

    if stored.dim() != 2:
        raise PeftAdapterError(f"PEFT adapter weights {weights_path}: {PROMPT_KEY!r} has shape "
                               f"{tuple(stored.shape)}, expected (num_virtual_tokens, token_dim)")
    if stored.shape[0] != n_virtual * n_sub:
        raise PeftAdapterError(f"PEFT adapter weights {weights_path}: {PROMPT_KEY!r} has {stored.shape[0]} rows but "
                               f"{config_path} says num_virtual_tokens={n_virtual} x num_transformer_submodules="
                               f"{n_sub}")
    width = stored.shape[1]
    if width != expect_dim:
        raise PeftAdapterError(f"PEFT adapter weights {weights_path}: prompt width {width} does not match the "
                               f"expected embedding size {expect_dim} (adapter base model: "
                               f"{config.get('base_model_name_or_path')!r})")
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
