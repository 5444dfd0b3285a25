"""Cross-model projectors (Su et al.): shapes, the v1 formula by hand, both training objectives,
determinism, and the cross-model job end to end on tiny random models (no real weights)."""
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_backbone, tiny_model, tokenizer

from promptgrid.engine.projector import (
    LinearProjector,
    MLPProjector,
    ProjectionTask,
    distance_loss,
    make_projector,
    project,
    train_distance,
    train_task,
)
from promptgrid.engine.scoring import encode_split


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (10x slower on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quiet(_msg):
    pass


# ---------------------------------------------------------------- shapes and formulas
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_shapes_single_and_batched(kind):
    g = make_projector(kind, length=5, d_a=6, d_b=7, hidden=9, seed=0)
    assert g(torch.randn(5, 6)).shape == (5, 7)
    assert g(torch.randn(3, 5, 6)).shape == (3, 5, 7)
    assert project(g, torch.randn(2, 5, 6)).requires_grad is False
    with pytest.raises(ValueError, match=r"\(L=5, d_a=6\).*got \(5, 7\)"):
        g(torch.randn(5, 7))
    with pytest.raises(ValueError, match="got \\(4, 6\\)"):
        g(torch.randn(4, 6))


def test_parameter_shapes_are_the_documented_ones():
    lin = LinearProjector(4, 3, 5)
    assert lin.linear.weight.shape == (5, 3) and lin.linear.bias.shape == (5,)
    mlp = MLPProjector(4, 3, 5, hidden=7)
    assert mlp.fc1.weight.shape == (7, 12) and mlp.fc1.bias.shape == (7,)
    assert mlp.fc2.weight.shape == (20, 7) and mlp.fc2.bias.shape == (20,)
    assert mlp.norm.weight.shape == (5,) and mlp.norm.bias.shape == (5,)
    assert torch.equal(MLPProjector(4, 3, 5, hidden=7, out_scale=0.1).norm.weight, torch.full((5,), 0.1))


def test_mlp_matches_the_formula_computed_by_hand():
    L, d_a, d_b, hidden = 2, 3, 4, 5
    g = make_projector("mlp", L, d_a, d_b, hidden=hidden, seed=3, out_scale=0.7)
    with torch.no_grad():
        g.norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        g.norm.weight.copy_(torch.tensor([0.7, 1.5, -0.5, 2.0]))
    P = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    W1, b1 = g.fc1.weight.tolist(), g.fc1.bias.tolist()
    W2, b2 = g.fc2.weight.tolist(), g.fc2.bias.tolist()
    gamma, beta = g.norm.weight.tolist(), g.norm.bias.tolist()
    x = [P[0, 0], P[0, 1], P[0, 2], P[1, 0], P[1, 1], P[1, 2]]  # vec(P): token 0 first, then token 1
    x = [float(v) for v in x]
    h = [math.tanh(sum(W1[j][k] * x[k] for k in range(L * d_a)) + b1[j]) for j in range(hidden)]
    y = [sum(W2[i][j] * h[j] for j in range(hidden)) + b2[i] for i in range(L * d_b)]
    expected = []
    for row in range(L):
        Y = y[row * d_b:(row + 1) * d_b]
        mean = sum(Y) / d_b
        var = sum((v - mean) ** 2 for v in Y) / d_b  # biased variance, as LayerNorm
        expected.append([(Y[c] - mean) / math.sqrt(var + 1e-5) * gamma[c] + beta[c] for c in range(d_b)])
    assert torch.allclose(g(P), torch.tensor(expected), atol=1e-5)


def test_linear_maps_each_token_alone_and_the_mlp_mixes_tokens():
    lin = make_projector("linear", 3, 4, 5, seed=0)
    P = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    W, b = lin.linear.weight, lin.linear.bias
    assert torch.allclose(lin(P), torch.stack([W @ P[i] + b for i in range(3)]), atol=1e-6)
    Q = P.clone()
    Q[0] += 1.0
    assert torch.allclose(lin(Q)[1:], lin(P)[1:]) and not torch.allclose(lin(Q)[0], lin(P)[0])
    mlp = make_projector("mlp", 3, 4, 5, hidden=8, seed=0)  # d_b > 2: a 2-wide LayerNorm row is always ±1
    assert not torch.allclose(mlp(Q)[2], mlp(P)[2])


def test_make_projector_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = make_projector("mlp", 3, 4, 5, hidden=6, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = make_projector("mlp", 3, 4, 5, hidden=6, seed=7)
    c = make_projector("mlp", 3, 4, 5, hidden=6, seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    with pytest.raises(ValueError, match="unknown projector 'conv'"):
        make_projector("conv", 3, 4, 5)


# ---------------------------------------------------------------- distance minimizing
def synthetic_pairs(n=48, L=4, d_a=6, d_b=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d_b, d_a, generator=gen)
    b = torch.randn(d_b, generator=gen)
    Pa = torch.randn(n, L, d_a, generator=gen)
    return Pa, Pa @ W.T + b, W, b


def test_distance_training_recovers_a_known_linear_map():
    Pa, Pb, W, b = synthetic_pairs()
    g = make_projector("linear", 4, 6, 5, seed=0)
    losses = train_distance(g, Pa, Pb, steps=400, lr=0.05, seed=0, log=quiet)
    assert losses[-1] < 1e-3 * losses[0]
    assert torch.allclose(g.linear.weight, W, atol=1e-2) and torch.allclose(g.linear.bias, b, atol=1e-2)
    fresh = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(9))  # prompts it never saw
    assert torch.allclose(project(g, fresh), fresh @ W.T + b, atol=5e-2)


def test_distance_training_reduces_the_mlp_loss_with_minibatches():
    Pa, Pb, _, _ = synthetic_pairs(n=12)
    Pb = torch.nn.functional.layer_norm(Pb, (5,))  # in the MLP's range (rows layer-normalised)
    g = make_projector("mlp", 4, 6, 5, hidden=32, seed=0)
    start = distance_loss(project(g, Pa), Pb).item()
    losses = train_distance(g, Pa, Pb, steps=150, lr=1e-2, seed=0, batch_size=4, log=quiet)
    assert len(losses) == 150
    assert distance_loss(project(g, Pa), Pb).item() < 0.2 * start


def test_distance_training_is_deterministic_for_a_seed():
    Pa, Pb, _, _ = synthetic_pairs(n=10)
    runs = []
    for seed in (0, 0, 1):
        g = make_projector("mlp", 4, 6, 5, hidden=16, seed=seed)
        losses = train_distance(g, Pa, Pb, steps=20, lr=1e-2, seed=seed, batch_size=3, log=quiet)
        runs.append((losses, g.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert runs[0][0] != runs[2][0]


def test_distance_training_rejects_unpaired_prompts():
    g = make_projector("linear", 4, 6, 5)
    with pytest.raises(ValueError, match="pair up row by row"):
        train_distance(g, torch.randn(3, 4, 6), torch.randn(2, 4, 5), steps=1, lr=0.1, seed=0, log=quiet)


# ---------------------------------------------------------------- task tuning
def lm_tasks(bb):
    """Two tiny tasks on the tiny causal LM, labels skewed so a prompt alone can lower the loss."""
    words = ["good", "bad", "fine", "poor", "great", "awful", "nice", "weak"]
    tasks = {}
    for t, labels_text in (("sent", ["yes", "no"]), ("topic", ["red", "blue"])):
        texts = [f"{words[i % 8]} {words[(3 * i) % 8]} item {i}" for i in range(24)]
        labels = [0 if i % 4 else 1 for i in range(24)]
        tasks[t] = ProjectionTask(bb.task_head(labels_text), encode_split(bb, texts, labels))
    return tasks


def full_loss(g, bb, tasks, prompts_a):
    total = 0.0
    with torch.no_grad():
        for t, task in tasks.items():
            batch = bb.collate(task.data.ids)
            for p in prompts_a[t]:
                logits = bb.logits(g(p).unsqueeze(0).expand(len(task.data), -1, -1), batch, task.head)
                total += F.cross_entropy(logits, task.data.labels).item()
    return total


def sensitive_lm():
    """The tiny causal LM (d = 16) with a 10x output layer: at its random init (std 0.02) every
    label's log-likelihood is nearly the same whatever the prompt, leaving a projector nothing to learn."""
    bb = tiny_backbone("causal_lm")
    with torch.no_grad():
        bb.model.lm_head.weight.mul_(10.0)
    return bb


def test_task_training_reduces_the_loss_round_robin_with_frozen_backbone_and_prompts():
    bb = sensitive_lm()
    tasks = lm_tasks(bb)
    gen = torch.Generator().manual_seed(0)
    prompts_a = {"sent": torch.randn(2, 3, 6, generator=gen), "topic": torch.randn(1, 3, 6, generator=gen)}
    originals = {t: p.clone() for t, p in prompts_a.items()}
    weights = {k: v.clone() for k, v in bb.model.state_dict().items()}
    g = make_projector("linear", 3, 6, 16, seed=0)
    before = full_loss(g, bb, tasks, prompts_a)

    calls = []
    original_logits = bb.logits

    def recording_logits(prompts, batch, head):
        calls.append(head.label_texts[0])
        return original_logits(prompts, batch, head)

    bb.logits = recording_logits
    try:
        losses = train_task(g, bb, tasks, prompts_a, steps=24, lr=0.05, seed=0, batch_size=6, log=quiet)
    finally:
        del bb.logits
    after = full_loss(g, bb, tasks, prompts_a)
    assert len(losses) == 24 and after < 0.9 * before  # measured: 4.34 -> 3.84
    # schedule: (sent, p0), (topic, p0), (sent, p1), repeat: tasks alternate
    assert calls[:6] == ["yes", "red", "yes", "yes", "red", "yes"]
    assert all(torch.equal(prompts_a[t], originals[t]) for t in prompts_a)
    assert all(torch.equal(v, weights[k]) for k, v in bb.model.state_dict().items())


def test_task_training_is_deterministic_for_a_seed():
    bb = tiny_backbone("causal_lm")
    tasks = lm_tasks(bb)
    prompts_a = {t: torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(1)) for t in tasks}
    results = []
    for _ in range(2):
        g = make_projector("mlp", 3, 6, 16, hidden=8, seed=2, out_scale=0.05)
        results.append((train_task(g, bb, tasks, prompts_a, steps=4, lr=1e-2, seed=5, batch_size=4, log=quiet),
                        g.fc1.weight.clone()))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


def test_task_training_names_a_task_without_prompts():
    bb = tiny_backbone("causal_lm")
    tasks = lm_tasks(bb)
    with pytest.raises(ValueError, match=r"no A prompts given for training task\(s\) \['topic'\]"):
        train_task(make_projector("linear", 3, 6, 16), bb, tasks, {"sent": torch.randn(1, 3, 6)}, steps=1, lr=0.1,
                   seed=0, log=quiet)


# ---------------------------------------------------------------- the pipeline verbs, on tiny models
def tiny_study(tmp_path):
    """A study on two tiny random backbones of different widths: encoder d=16 -> causal LM d=24."""
    from promptgrid.config import StudyConfig
    from promptgrid.models.loading import wrap_model
    from promptgrid.pipeline.study import Study

    words = {0: ["good", "great", "nice"], 1: ["bad", "awful", "poor"]}
    for task in ("ta", "tb", "held"):
        rows = [{"id": f"{task}{i}", "text": f"{words[i % 2][i % 3]} {task} thing {i}", "label": i % 2}
                for i in range(40)]
        (tmp_path / f"{task}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    raw = {
        "study": "xm", "results_dir": str(tmp_path / "results"),
        "backbones": {"enc": {"model": "tiny", "kind": "encoder", "max_length": 16},
                      "lm": {"model": "tiny", "kind": "causal_lm", "max_length": 16}},
        "task_defaults": {"text_fields": ["text"], "id_field": "id", "max_dev": 6, "max_test": 8,
                          "dev_fraction": 0.2, "test_fraction": 0.2},
        "tasks": {t: {"source": "local", "path": str(tmp_path / f"{t}.jsonl"), "labels": {"0": "yes", "1": "no"}}
                  for t in ("ta", "tb", "held")},
        "sources": ["ta", "tb"], "targets": ["held"], "seeds": [0, 1],
        "prompt": {"length": 3},
        "training": {"steps": 2, "batch_size": 4, "eval_every": 2, "checkpoint_every": 2, "early_step": 1,
                     "precision": "fp32"},
        "transfer": {"methods": ["zeroshot"]},
        "cross_model": {"source_backbone": "enc", "target_backbone": "lm", "held_out": ["held"],
                        "projectors": ["linear", "mlp"], "objectives": ["distance", "task"], "hidden": 8,
                        "steps": 3, "lr": 0.01},
    }
    cfg = StudyConfig.from_dict(raw)
    study = Study(cfg)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      attn_implementation="eager", pad_token_id=0,
                                      vocab_size=tokenizer().vocab_size))
    study._backbones = {"enc": wrap_model("enc", cfg.backbones["enc"], tiny_model("encoder"), tokenizer()),
                        "lm": wrap_model("lm", cfg.backbones["lm"], lm, tokenizer())}
    return study, raw


def test_cross_model_verbs_write_the_table_and_figure(tmp_path):
    from promptgrid.pipeline import crossmodel as xm
    from promptgrid.pipeline.prepare import prepare
    from promptgrid.pipeline.train import train
    from promptgrid.storage import layout
    from promptgrid.storage.files import load_prompt, read_table, read_table_meta

    study, raw = tiny_study(tmp_path)
    for t in raw["tasks"]:
        prepare(study, t)
        for b in raw["backbones"]:
            train(study, b, t)
    for p in raw["cross_model"]["projectors"]:
        for o in raw["cross_model"]["objectives"]:
            xm.cross_model(study, p, o)
            for rel in layout.cross_job_outputs(study.cfg, p, o):
                assert study.path(rel).exists(), rel
    table = xm.cross_model_table(study)
    assert list(table.columns) == xm.COLUMNS
    assert len(table) == 2 * 2 * 1 * 2 * 2  # projectors x objectives x held-out x seeds x modes
    assert set(table["mode"]) == {"zeroshot", "init"} and set(table["backbone_b"]) == {"lm"}
    baseline = read_table(study.path("parts/lm/train/held.runs.parquet")).set_index("seed")["score"]
    assert (table["baseline_score"] == table["seed"].map(baseline)).all()
    assert (table["gain"] - (table["score"] - table["baseline_score"])).abs().max() < 1e-9
    assert table["score"].between(0, 100).all()
    on_disk = read_table(study.path(layout.table(layout.CROSS_TABLE)))
    pd.testing.assert_frame_equal(on_disk, table)
    meta = read_table_meta(study.path(layout.table(layout.CROSS_TABLE)))
    assert meta["study"] == "xm" and meta["config"]["cross_model"]["target_backbone"] == "lm"
    # zero-shot rows score exactly the projected prompt that was saved
    from promptgrid.engine.scoring import score_bank

    bb = study.backbone("lm")
    prompt, pmeta = load_prompt(study.path(layout.projected_prompt(study.cfg, "mlp", "task", "zeroshot", "held", 1)))
    assert prompt.shape == (3, 24) and pmeta["projector"] == "mlp"
    score = score_bank(bb, study.head("lm", "held"), prompt.unsqueeze(0), study.encoded("lm", "held", "test"),
                       "accuracy")[0]
    row = table[(table.projector == "mlp") & (table.objective == "task") & (table["mode"] == "zeroshot")
                & (table.seed == 1)]
    assert row["score"].item() == pytest.approx(score)
    xm.cross_model_figure(study)
    assert study.path("figures/cross_model.png").stat().st_size > 0
    assert study.path("figures/cross_model.pdf").stat().st_size > 0


def test_cross_model_needs_a_task_to_train_the_projector(tmp_path):
    from promptgrid.config import ConfigError, StudyConfig
    from promptgrid.pipeline.checks import check_cross_model

    _, raw = tiny_study(tmp_path)
    raw["cross_model"]["held_out"] = ["ta", "tb", "held"]
    with pytest.raises(ConfigError, match="cross_model.held_out.*needs at least one task"):
        check_cross_model(StudyConfig.from_dict(raw))
