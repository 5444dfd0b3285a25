"""Cross-model projectors (Su et al.): the registry (built-in and plugin projectors), shapes, the v1 formula by
hand, both fits, determinism, the renamed config key, and the cross-model job, table and figure end to end on
tiny random models (no real weights); a plugin projector through the Snakemake DAG."""
import json
import math
import re

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_backbone, tiny_model, tokenizer

from promptgrid.engine.projection import (
    FITS,
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
def test_the_built_in_projectors_are_registered_from_their_own_files():
    from promptgrid.registry import PROJECTORS

    assert [s.name for s in PROJECTORS.ordered()][:2] == ["linear", "mlp"]
    for name in ("linear", "mlp"):
        spec = PROJECTORS[name]
        assert spec.build.__module__ == f"promptgrid.engine.projectors.{name}" and spec.summary and spec.paper
    assert FITS == ("distance", "task")


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_shapes_single_and_batched(kind):
    g = make_projector(kind, length=5, d_a=6, d_b=7, hidden=9, seed=0)
    assert g(torch.randn(5, 6)).shape == (5, 7)
    assert g(torch.randn(3, 5, 6)).shape == (3, 5, 7)
    assert project(g, torch.randn(2, 5, 6)).requires_grad is False
    with pytest.raises(ValueError, match=rf"projector '{kind}' takes prompts \(L=5, d_a=6\).*got \(5, 7\)"):
        g(torch.randn(5, 7))
    with pytest.raises(ValueError, match="got \\(4, 6\\)"):
        g(torch.randn(4, 6))


def test_parameter_shapes_are_the_documented_ones():
    lin = make_projector("linear", 4, 3, 5).body
    assert lin.weight.shape == (5, 3) and lin.bias.shape == (5,)
    mlp = make_projector("mlp", 4, 3, 5, hidden=7).body
    assert mlp.fc1.weight.shape == (7, 12) and mlp.fc1.bias.shape == (7,)
    assert mlp.fc2.weight.shape == (20, 7) and mlp.fc2.bias.shape == (20,)
    assert mlp.norm.weight.shape == (5,) and mlp.norm.bias.shape == (5,)
    assert torch.equal(make_projector("mlp", 4, 3, 5, hidden=7, out_scale=0.1).body.norm.weight, torch.full((5,), 0.1))
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        make_projector("mlp", 4, 3, 5, hidden=0)


def test_mlp_matches_the_formula_computed_by_hand():
    L, d_a, d_b, hidden = 2, 3, 4, 5
    g = make_projector("mlp", L, d_a, d_b, hidden=hidden, seed=3, out_scale=0.7)
    body = g.body
    with torch.no_grad():
        body.norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        body.norm.weight.copy_(torch.tensor([0.7, 1.5, -0.5, 2.0]))
    P = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    W1, b1 = body.fc1.weight.tolist(), body.fc1.bias.tolist()
    W2, b2 = body.fc2.weight.tolist(), body.fc2.bias.tolist()
    gamma, beta = body.norm.weight.tolist(), body.norm.bias.tolist()
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
    W, b = lin.body.weight, lin.body.bias
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
    assert not torch.equal(a.body.fc1.weight, c.body.fc1.weight)
    with pytest.raises(KeyError, match="unknown projector 'conv'; registered: \\['linear', 'mlp'"):
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
    assert torch.allclose(g.body.weight, W, atol=1e-2) and torch.allclose(g.body.bias, b, atol=1e-2)
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
                        g.body.fc1.weight.clone()))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


def test_task_training_names_a_task_without_prompts():
    bb = tiny_backbone("causal_lm")
    tasks = lm_tasks(bb)
    with pytest.raises(ValueError, match=r"no A prompts given for training task\(s\) \['topic'\]"):
        train_task(make_projector("linear", 3, 6, 16), bb, tasks, {"sent": torch.randn(1, 3, 6)}, steps=1, lr=0.1,
                   seed=0, log=quiet)


# ---------------------------------------------------------------- recipes: quick, and Su et al.'s
def test_make_optimizer_is_su_s_adamw_or_quick_s_adam():
    from promptgrid.engine.projection import RECIPES, SU_RECIPE, make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    su = make_optimizer(params, RECIPES["su"], lr=0.1)  # su fixes its own lr: cross_model.lr is not used
    assert RECIPES["su"] is SU_RECIPE and type(su) is torch.optim.AdamW
    assert {k: su.defaults[k] for k in ("lr", "eps", "weight_decay")} == {"lr": 5e-3, "eps": 1e-6, "weight_decay": 0.0}
    assert SU_RECIPE.batch_size == 16
    quick = make_optimizer(params, RECIPES["quick"], lr=0.1)
    assert type(quick) is torch.optim.Adam and quick.defaults["lr"] == 0.1 and quick.defaults["eps"] == 1e-8


def first_adam_step(w, grad, lr, eps):
    """Adam / AdamW (no weight decay) after one step, by hand: the bias-corrected moments are g and g^2."""
    return w - lr * grad / (grad.abs() + eps)


@pytest.mark.parametrize("fit", ["distance", "task"])
def test_both_fits_step_with_the_recipe_s_optimiser_and_lr(fit, monkeypatch):
    import promptgrid.engine.projection as projection

    used = []
    real = projection.make_optimizer
    monkeypatch.setattr(projection, "make_optimizer", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    g = make_projector("linear", 3, 6, 16 if fit == "task" else 5, seed=0)
    w0 = g.body.weight.detach().clone()
    if fit == "distance":
        Pa, Pb, _, _ = synthetic_pairs(n=8, L=3, d_a=6, d_b=5)
        distance_loss(g(Pa), Pb).backward()
        run = lambda: train_distance(g, Pa, Pb, steps=1, lr=0.1, seed=0, log=quiet,  # noqa: E731
                                     recipe=projection.SU_RECIPE)
    else:
        bb = sensitive_lm()
        tasks = {"sent": lm_tasks(bb)["sent"]}
        prompts_a = {"sent": torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(0))}
        task = tasks["sent"]
        idx = projection.batch_indices(len(task.data), 4, 0, 0).tolist()
        logits = bb.logits(g(prompts_a["sent"][0]).unsqueeze(0).expand(4, -1, -1),
                           bb.collate([task.data.ids[i] for i in idx]), task.head)
        F.cross_entropy(logits, task.data.labels[idx]).backward()
        run = lambda: train_task(g, bb, tasks, prompts_a, steps=1, lr=0.1, seed=0, batch_size=4,  # noqa: E731
                                 log=quiet, recipe=projection.SU_RECIPE)
    grad = g.body.weight.grad.clone()
    g.zero_grad(set_to_none=True)
    run()
    assert len(used) == 1 and type(used[0]) is torch.optim.AdamW and used[0].defaults["lr"] == 5e-3
    assert torch.allclose(g.body.weight.detach(), first_adam_step(w0, grad, 5e-3, 1e-6), atol=1e-7)
    assert not torch.allclose(g.body.weight.detach(), first_adam_step(w0, grad, 0.1, 1e-6), atol=1e-4)


def test_epoch_steps_count_su_s_passes():
    from promptgrid.engine.projection import distance_epoch_steps, task_epoch_steps

    assert [distance_epoch_steps(n, 16) for n in (1, 16, 17, 48)] == [1, 1, 2, 3]
    # Su et al.'s mixture: every task cut to the smallest one's size (10), with each of its A prompts (2 + 1)
    assert task_epoch_steps({"a": 30, "b": 10}, {"a": 2, "b": 1}, 16) == 2  # ceil(10 * 3 / 16)
    assert task_epoch_steps({"a": 30, "b": 10}, {"a": 2, "b": 2}, 4) == 10


# ---------------------------------------------------------------- the pipeline verbs, on tiny models
def tiny_study(tmp_path):
    """A study on two tiny random backbones of different widths: encoder d=16 -> causal LM d=24."""
    from promptgrid.config import StudyConfig
    from promptgrid.models.loading import wrap_model
    from promptgrid.pipeline.context import Study

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
                        "projectors": ["linear", "mlp"], "fits": ["distance", "task"], "hidden": 8,
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


def test_project_jobs_then_collect_and_figure_write_the_table_and_figure(tmp_path):
    from promptgrid.pipeline import crossmodel as xm
    from promptgrid.pipeline.figures import figure
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
        for f in raw["cross_model"]["fits"]:
            xm.project(study, p, f)
            for rel in layout.cross_job_outputs(study.cfg, p, f):
                assert study.path(rel).exists(), rel
    table = xm.gather(study)  # what the collect verb runs for a study with a cross_model section
    assert list(table.columns) == xm.COLUMNS
    assert len(table) == 2 * 2 * 1 * 2 * 2  # projectors x fits x held-out x seeds x modes
    assert set(table["mode"]) == {"zeroshot", "init"} and set(table["backbone_b"]) == {"lm"}
    assert set(table["fit"]) == {"distance", "task"} and "objective" not in table.columns
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
    assert prompt.shape == (3, 24) and pmeta["projector"] == "mlp" and pmeta["fit"] == "task"
    score = score_bank(bb, study.head("lm", "held"), prompt.unsqueeze(0), study.encoded("lm", "held", "test"),
                       "accuracy")[0]
    row = table[(table.projector == "mlp") & (table.fit == "task") & (table["mode"] == "zeroshot")
                & (table.seed == 1)]
    assert row["score"].item() == pytest.approx(score)
    # the generic figure verb draws the registered kind, one variant: the study's A -> B pair
    figure(study, "cross_model", "lm")
    for ext in ("png", "pdf"):
        assert study.path(layout.figure_file("lm", "cross_model", "enc_to_lm", ext)).stat().st_size > 0


def test_the_su_recipe_fits_for_its_epochs_and_records_them(tmp_path):
    from safetensors import safe_open

    from promptgrid.pipeline import crossmodel as xm
    from promptgrid.pipeline.prepare import prepare
    from promptgrid.pipeline.train import train
    from promptgrid.storage import layout
    from promptgrid.storage.files import read_table_meta

    study, raw = tiny_study(tmp_path)
    study.cfg.cross_model.recipe, study.cfg.cross_model.epochs = "su", 3
    for t in raw["tasks"]:
        prepare(study, t)
        for b in raw["backbones"]:
            train(study, b, t)
    n_train = {t: len(study.encoded("lm", t, "train")) for t in ("ta", "tb")}
    smallest = min(n_train.values())
    expected = {"distance": 3 * 1,  # 2 tasks x 2 seeds = 4 prompt pairs: one batch of 16 per epoch
                "task": 3 * math.ceil(smallest * 2 * 2 / 16)}  # 2 tasks cut to the smallest, x 2 seeds each
    for fit, steps in expected.items():
        xm.project(study, "linear", fit)
        with safe_open(str(study.path(layout.projector_file(study.cfg, "linear", fit))), framework="pt") as fh:
            saved = fh.metadata()
        assert (saved["recipe"], int(saved["steps"])) == ("su", steps), fit
        meta = read_table_meta(study.path(layout.cross_part(study.cfg, "linear", fit)))
        assert (meta["projector_recipe"], meta["projector_steps"]) == ("su", steps)
    assert expected["task"] > 3  # the epochs are passes over the data, not single steps


def test_new_cross_model_keys_at_their_defaults_leave_the_hash_alone(tmp_path):
    from pathlib import Path

    import yaml

    from promptgrid.config import StudyConfig
    from promptgrid.config.sections import CrossModelConfig
    from promptgrid.config.stages import stage_hash

    raw = yaml.safe_load((Path(__file__).parents[2] / "studies" / "cross-model.yaml").read_text())
    cfg = StudyConfig.from_dict(raw)
    assert (cfg.cross_model.recipe, cfg.cross_model.epochs) == ("quick", 1024)
    assert CrossModelConfig.HASH_NEUTRAL == {"recipe": "quick", "epochs": 1024}
    # the study's cross_model hash before recipe and epochs existed (commit 905ce6d): its projectors stay valid
    assert stage_hash(cfg, "cross_model") == "9e2935f4af8f789f"
    for change in ({"recipe": "su"}, {"epochs": 8}):
        other = StudyConfig.from_dict({**raw, "cross_model": {**raw["cross_model"], **change}})
        assert stage_hash(other, "cross_model") != stage_hash(cfg, "cross_model"), change


def test_cross_model_needs_a_task_to_train_the_projector(tmp_path):
    from promptgrid.config import ConfigError, StudyConfig
    from promptgrid.pipeline.checks import check_cross_model

    _, raw = tiny_study(tmp_path)
    raw["cross_model"]["held_out"] = ["ta", "tb", "held"]
    with pytest.raises(ConfigError, match="cross_model.held_out.*needs at least one task"):
        check_cross_model(StudyConfig.from_dict(raw))


# ---------------------------------------------------------------- the registry, the config, the verbs, the DAG
def test_the_figure_kind_has_a_variant_only_with_a_cross_model_section(tmp_path):
    from promptgrid.config import StudyConfig
    from promptgrid.registry import FIGURES

    _, raw = tiny_study(tmp_path)
    spec = FIGURES.require("cross_model")
    assert spec.tables == ("cross_model",)
    assert spec.variants(StudyConfig.from_dict(raw)) == ["enc_to_lm"]
    assert spec.variants(StudyConfig.from_dict({**raw, "cross_model": None})) == []
    assert "**enc**" in spec.caption(StudyConfig.from_dict(raw), "enc_to_lm")


def test_objectives_is_read_as_fits_with_a_warning(tmp_path):
    from promptgrid.config import ConfigError, StudyConfig

    _, raw = tiny_study(tmp_path)
    cm = dict(raw["cross_model"])
    del cm["fits"]
    with pytest.warns(FutureWarning, match="'cross_model.objectives' is deprecated: it is called 'cross_model.fits'"):
        cfg = StudyConfig.from_dict({**raw, "cross_model": {**cm, "objectives": ["task"]}})
    assert cfg.cross_model.fits == ["task"] and not hasattr(cfg.cross_model, "objectives")
    assert StudyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).cross_model.fits == ["task"]  # config.json
    with pytest.raises(ConfigError, match="cross_model.objectives'?: is the old name of 'fits'"):
        StudyConfig.from_dict({**raw, "cross_model": {**cm, "objectives": ["task"], "fits": ["distance"]}})
    with pytest.raises(ConfigError, match=r"cross_model.fits\[1\]'?: unknown fit 'tune'"):
        StudyConfig.from_dict({**raw, "cross_model": {**cm, "fits": ["task", "tune"]}})


def test_cli_has_one_projector_verb_and_no_cross_model_verbs():
    from promptgrid.cli import VERBS, build_parser

    assert not [v for v in VERBS if v.startswith("cross")]
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert "project" in sub.choices and "cross-model" not in sub.choices
    args = build_parser().parse_args(["project", "--config", "c.json", "--projector", "mlp", "--fit", "task"])
    assert (args.projector, args.fit) == ("mlp", "task")


def toy_spec():
    """A projector as a plugin registers one: tanh of a per-token linear map."""
    from promptgrid.registry import ProjectorSpec

    def build(length, d_a, d_b, hidden, out_scale):
        return torch.nn.Sequential(torch.nn.Linear(d_a, d_b), torch.nn.Tanh())

    return ProjectorSpec(name="toy", order=9, build=build, summary="tanh(W P_i + b)", paper="none: a test's")


def test_a_plugin_projector_is_validated_built_and_fitted(tmp_path, monkeypatch):
    from promptgrid.config import ConfigError, StudyConfig
    from promptgrid.registry import PROJECTORS

    _, raw = tiny_study(tmp_path)
    cm = {**raw["cross_model"], "projectors": ["linear", "toy"]}
    with pytest.raises(ConfigError, match=r"cross_model.projectors\[1\]'?: unknown projector 'toy'"):
        StudyConfig.from_dict({**raw, "cross_model": cm})
    monkeypatch.setitem(PROJECTORS, "toy", toy_spec())
    assert StudyConfig.from_dict({**raw, "cross_model": cm}).cross_model.projectors == ["linear", "toy"]
    default = {k: v for k, v in cm.items() if k != "projectors"}
    assert StudyConfig.from_dict({**raw, "cross_model": default}).cross_model.projectors == ["linear", "mlp", "toy"]
    g = make_projector("toy", 4, 6, 5, seed=0)
    assert g(torch.randn(4, 6)).shape == (4, 5)
    Pa, Pb, _, _ = synthetic_pairs(n=12)
    losses = train_distance(g, Pa, torch.tanh(Pb), steps=100, lr=0.05, seed=0, log=quiet)
    assert losses[-1] < 0.5 * losses[0]
    broken = toy_spec().__class__(name="broken", order=10, summary="", paper="",
                                  build=lambda length, d_a, d_b, hidden, out_scale: torch.nn.Linear(d_a, d_b + 1))
    monkeypatch.setitem(PROJECTORS, "broken", broken)
    with pytest.raises(ValueError, match=r"projector 'broken' returned \(2, 4, 6\).*expected \(2, 4, 5\)"):
        make_projector("broken", 4, 6, 5)(torch.randn(2, 4, 6))


def test_a_plugin_projector_reaches_the_dag(repo, venv_env, tmp_path):
    """A study names tests/plugins/toy_projector.py: its projector passes the schema and the typed config at DAG
    build, and the rules schedule its jobs (one per fit), the collect and the generic figure jobs."""
    import subprocess

    import yaml

    raw = yaml.safe_load((repo / "studies/cross-model.yaml").read_text())
    raw["study"] = "toy-projector"
    raw["plugins"] = [str(repo / "tests/plugins/toy_projector.py")]
    raw["cross_model"]["projectors"] = ["linear", "toy_tanh"]
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(raw))
    args = ["all", "-n", "-p", "--configfile", str(study), "--config", f"results_dir={tmp_path}"]
    out = subprocess.run(["snakemake", *args], cwd=repo, env=venv_env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    for fit in ("distance", "task"):
        assert "promptgrid project --config" in text and f"--projector toy_tanh --fit {fit}" in text
        assert f"parts/crossmodel/minilm_to_smollm2/toy_tanh_{fit}.parquet" in text
    stats = text.split("Job stats:", 1)[1]
    assert re.search(r"\ncross_model\s+4\n", stats) and re.search(r"\nfig_cross_model\s+1\n", stats)
    assert re.search(r"\ncollect\s+1\n", stats)
    assert "cross_model_table" not in stats
