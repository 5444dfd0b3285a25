"""Packed deep prompts: an uneven batch run packed (per-example prefix blocks in one row's cache) gives the
padded deep path's pooled states and prompt gradients."""
import pytest
import torch
from tiny_models import liven, tiny_backbone

from promptgrid.models import packing
from promptgrid.models.backbones import Backbone

TEXTS = ["a very long sentence that goes on and on for quite a while indeed", "short", "two words",
         "a medium length sentence here", "ok", "yes no maybe", "the end of the batch"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def bb():
    return liven(tiny_backbone("encoder"), std=0.3, seed=1)


def _setup(bb, K=3, L=3):
    """The uneven batch and deep prompts (B, L, D): K different prompts, row b using prompt b % K."""
    batch = bb.collate(bb.input_ids(TEXTS))
    assert packing.packing_saves(batch.attention_mask), "the test needs a batch that packing shrinks"
    lay = packing.layout(batch.attention_mask)
    assert any(len({b % K for b in row}) > 1 for row in lay.rows), "a packed row must mix different prompts"
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(K, L, bb.deep_width, generator=g) * 0.5
    return batch, bank[torch.arange(len(TEXTS)) % K]


def _padded(bb, prompts, batch):
    """The padded deep path (Backbone.pooled, the base class's, which never packs)."""
    return Backbone.pooled(bb, prompts, batch)


def test_packed_deep_pool_equals_padded_values_and_gradients(bb):
    batch, prompts = _setup(bb)
    p_packed = prompts.clone().requires_grad_(True)
    p_padded = prompts.clone().requires_grad_(True)
    embeds, mask = bb.token_inputs(batch)
    packed = packing.packed_deep_mean_pool(bb.model, bb.prefix_geometry, p_packed, embeds, mask)
    padded = _padded(bb, p_padded, batch)
    assert packed.shape == padded.shape == (len(TEXTS), bb.model.config.hidden_size)
    assert torch.isfinite(packed).all()
    # the examples differ (a broken mask would have to reproduce every one of them)
    assert (padded[0] - padded[1]).abs().max() > 0.1
    torch.testing.assert_close(packed, padded, atol=ATOL, rtol=0)
    weights = torch.randn(padded.shape, generator=torch.Generator().manual_seed(1))
    g_packed = torch.autograd.grad((packed * weights).sum(), p_packed)[0]
    g_padded = torch.autograd.grad((padded * weights).sum(), p_padded)[0]
    assert g_padded.abs().amax(dim=(1, 2)).min() > 0, "every example's prompt gets a gradient"
    torch.testing.assert_close(g_packed, g_padded, atol=ATOL, rtol=0)


def test_each_example_sees_only_its_own_prefix(bb):
    """Changing one example's prompt moves that example's pooled state only, though it shares a packed row."""
    batch, prompts = _setup(bb)
    embeds, mask = bb.token_inputs(batch)
    lay = packing.layout(mask)
    row = next(r for r in lay.rows if len(r) > 1)
    b, other = row[0], row[1:]
    changed = prompts.clone()
    changed[b] += 1.0
    with torch.no_grad():
        before = packing.packed_deep_mean_pool(bb.model, bb.prefix_geometry, prompts, embeds, mask)
        after = packing.packed_deep_mean_pool(bb.model, bb.prefix_geometry, changed, embeds, mask)
    assert (after[b] - before[b]).abs().max() > 1e-2
    torch.testing.assert_close(after[other], before[other], atol=1e-6, rtol=0)


def test_encoder_pooled_packs_deep_prompts_on_uneven_batches(bb, monkeypatch):
    batch, prompts = _setup(bb)
    calls = []
    real = packing.packed_deep_mean_pool

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(packing, "packed_deep_mean_pool", counting)
    with torch.no_grad():
        pooled = bb.pooled(prompts, batch)
        torch.testing.assert_close(pooled, _padded(bb, prompts, batch), atol=ATOL, rtol=0)
        assert len(calls) == 1
        # an even batch (packing saves nothing) takes the padded path
        even = bb.collate(bb.input_ids(["two words", "two more"]))
        assert not packing.packing_saves(even.attention_mask)
        bb.pooled(prompts[:2], even)
        assert len(calls) == 1
