"""Sequence packing: the packed encoder gives the unpacked batch's pooled states and gradients."""
import random

import pytest
import torch
from tiny_models import tiny_backbone

from promptgrid.models import packing


def test_pack_rows_fits_every_example_once_and_respects_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(50)]
    rows = packing.pack_rows(lengths, 40)
    flat = sorted(i for row in rows for i in row)
    assert flat == list(range(50))
    assert all(sum(lengths[i] for i in row) <= 40 for row in rows)
    # first-fit decreasing never needs more than 11/9 OPT + 1 rows; OPT >= ceil(total / capacity)
    assert len(rows) <= 11 / 9 * -(-sum(lengths) // 40) + 1


def test_pack_rows_hand_example_and_overflow():
    assert packing.pack_rows([3, 5, 2, 4], 7) == [[1, 2], [3, 0]]
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        packing.pack_rows([3, 9], 8)


def test_packing_saves_only_uneven_batches():
    even = torch.ones(4, 10, dtype=torch.long)
    uneven = torch.zeros(4, 10, dtype=torch.long)
    for i, n in enumerate((10, 3, 4, 2)):
        uneven[i, :n] = 1
    assert not packing.packing_saves(even)
    assert packing.packing_saves(uneven)  # 4 rows -> 2 rows


def _uneven_batch(bb):
    texts = ["a very long sentence that goes on and on for quite a while indeed", "short", "two words",
             "a medium length sentence here", "ok", "yes no maybe"]
    return bb.collate(bb.input_ids(texts))


def test_packed_pool_equals_unpacked_values_and_gradients():
    bb = tiny_backbone("encoder")
    batch = _uneven_batch(bb)
    torch.manual_seed(1)
    prompts = (0.1 * torch.randn(6, 4, bb.embed_dim)).requires_grad_(True)
    embeds, mask = bb.prompted_inputs(prompts, batch)
    assert packing.packing_saves(mask)
    hidden = bb._hidden(inputs_embeds=embeds, attention_mask=mask)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    plain = (hidden * m).sum(1) / m.sum(1)
    packed = packing.packed_mean_pool(bb.model, embeds, mask)
    assert packed.shape == plain.shape == (6, bb.model.config.hidden_size)
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    g_plain = torch.autograd.grad((plain ** 2).sum(), prompts)[0]
    g_packed = torch.autograd.grad((packed ** 2).sum(), prompts)[0]
    assert g_plain.abs().sum() > 0
    torch.testing.assert_close(g_packed, g_plain, atol=1e-5, rtol=1e-4)


def test_encoder_logits_use_packing_and_match_per_example_scoring():
    bb = tiny_backbone("encoder")
    head = bb.task_head(["good", "bad"])
    batch = _uneven_batch(bb)
    torch.manual_seed(2)
    prompts = 0.1 * torch.randn(6, 4, bb.embed_dim)
    together = bb.logits(prompts, batch, head)
    alone = torch.cat([bb.logits(prompts[i:i + 1], bb.collate([batch.input_ids[i, :int(batch.attention_mask[i].sum())].tolist()]),
                                 head) for i in range(6)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
