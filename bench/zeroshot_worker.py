"""One zero-shot job: import promptgrid, load MiniLM, score the given prompts on a target's test split.

    python bench/zeroshot_worker.py DATA.pt PROMPTS.pt [INDEX ...]

DATA.pt holds {'texts', 'labels', 'label_texts'}; PROMPTS.pt a (K, L, d) tensor; INDEX picks prompts
(default: all, in one predict_bank pass). Prints one JSON line: the accuracies and the seconds the
scoring took (model already loaded, data tokenized).
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from promptgrid.config import default_cache_dir, load_config  # noqa: E402
from promptgrid.engine.scoring import encode_split, score_bank  # noqa: E402
from promptgrid.models.loading import load_backbone  # noqa: E402
from promptgrid.models.precision import resolve_attention, resolve_precision  # noqa: E402

data, prompts = torch.load(sys.argv[1]), torch.load(sys.argv[2])
if len(sys.argv) > 3:
    prompts = prompts[[int(i) for i in sys.argv[3:]]]
cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
bb = load_backbone("minilm", cfg.backbones["minilm"], default_cache_dir(),
                   attention=resolve_attention(cfg.training.attention))
head = bb.task_head(data["label_texts"])
test = encode_split(bb, data["texts"], data["labels"])
t0 = time.perf_counter()
scores = score_bank(bb, head, prompts, test, "accuracy", cfg.training.eval_batch_size,
                    resolve_precision(cfg.training.precision))
print(json.dumps({"scores": scores, "eval_s": time.perf_counter() - t0}))
