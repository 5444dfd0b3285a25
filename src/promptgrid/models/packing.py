"""Sequence packing for bidirectional encoders: several prompted examples share one row.

A random training batch of short, uneven inputs is mostly padding once padded to its longest
example, and a CPU spends its time on those pad tokens. Packing places the examples end to end in
as few rows as fit (each row no longer than the padded batch was), gives every example its own
position ids (restarting at 0, exactly as alone) and a block-diagonal attention mask, so each
example attends only to itself. The hidden states are therefore those of the unpacked batch up to
float rounding, while the model runs on far fewer tokens.
"""
from __future__ import annotations

import torch


def pack_rows(lengths: list, capacity: int) -> list:
    """First-fit decreasing: per row, the example indices it holds (sum of lengths <= capacity).

    Deterministic: ties in length keep the example order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows, free = [], []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens, more than the row capacity {capacity}")
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(capacity - n)
    return rows


def packing_saves(mask: torch.Tensor, min_saving: float = 0.2) -> bool:
    """True when packing the (B, T) 0/1 mask's examples would drop at least ``min_saving`` of the rows."""
    B, T = mask.shape
    if B < 2:
        return False
    needed = len(pack_rows(mask.sum(1).tolist(), T))
    return needed <= (1.0 - min_saving) * B


def packed_mean_pool(model, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden state over each example's own positions, run packed.

    embeds: (B, T, d) inputs_embeds whose valid positions come first in each row (prompt, then
    tokens, then padding), mask: (B, T) 0/1. Returns (B, h), equal to pooling the unpacked batch.
    ``model`` is a Hugging Face encoder with absolute position ids that accepts a 4D additive mask.
    """
    B, T, d = embeds.shape
    lengths = mask.sum(1).tolist()
    rows = pack_rows(lengths, T)
    R = len(rows)
    # where each example's positions go in the packed rows
    row_of, start_of = [0] * B, [0] * B
    for r, members in enumerate(rows):
        offset = 0
        for i in members:
            row_of[i], start_of[i] = r, offset
            offset += lengths[i]
    src_b = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)])
    src_t = torch.cat([torch.arange(n) for n in lengths])
    dst_r = torch.cat([torch.full((n,), row_of[i], dtype=torch.long) for i, n in enumerate(lengths)])
    dst_t = torch.cat([start_of[i] + torch.arange(n) for i, n in enumerate(lengths)])

    packed = embeds.new_zeros(R, T, d).index_put((dst_r, dst_t), embeds[src_b, src_t])
    position_ids = torch.zeros(R, T, dtype=torch.long)
    position_ids[dst_r, dst_t] = src_t
    segment = torch.full((R, T), -1, dtype=torch.long)
    segment[dst_r, dst_t] = src_b
    same = (segment.unsqueeze(2) == segment.unsqueeze(1)) & (segment.unsqueeze(2) >= 0)
    # unused tail positions see only themselves: no row of all -inf, so no NaN anywhere
    same |= torch.eye(T, dtype=torch.bool).unsqueeze(0) & (segment.unsqueeze(2) < 0)
    dtype = embeds.dtype if embeds.dtype.is_floating_point else torch.float32
    additive = torch.zeros(R, 1, T, T, dtype=dtype).masked_fill(~same.unsqueeze(1), torch.finfo(dtype).min)

    hidden = model(inputs_embeds=packed, attention_mask=additive, position_ids=position_ids).last_hidden_state
    token_hidden = hidden[dst_r, dst_t]  # (sum(lengths), h)
    sums = hidden.new_zeros(B, hidden.shape[-1]).index_add(0, src_b, token_hidden)
    return sums / torch.tensor(lengths, dtype=sums.dtype).clamp(min=1).unsqueeze(1)
