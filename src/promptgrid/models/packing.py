"""Sequence packing for bidirectional encoders: several prompted examples share one row.

A random training batch of short, uneven inputs is mostly padding once padded to its longest
example, and a CPU spends its time on those pad tokens. Packing places the examples end to end in
as few rows as fit (each row no longer than the padded batch was), gives every example its own
position ids (restarting at 0, exactly as alone) and a block-diagonal attention mask, so each
example attends only to itself. The hidden states are therefore those of the unpacked batch up to
float rounding, while the model runs on far fewer tokens.

Deep prompts (:mod:`promptgrid.models.prefix`) pack the same way: the tokens share rows as above,
and a row's cache holds the key/value prefixes of all its examples side by side, one block of L
positions per example; the mask lets each token see its own example's prefix block and tokens only,
and the tokens' positions start at L, as in the padded deep path (the prefix takes positions 0..L-1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from promptgrid.models import prefix


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


@dataclass
class Layout:
    """Where each example's positions go once packed. With N = sum(lengths): src_b, src_t (N,) index the
    unpacked (B, T) batch, dst_r, dst_t (N,) the packed (R, T) rows; segment (R, T) is the example each packed
    position belongs to (-1: unused tail); members (R, M) the examples of each row in order (-1: empty slot)."""

    rows: list
    lengths: list
    src_b: torch.Tensor
    src_t: torch.Tensor
    dst_r: torch.Tensor
    dst_t: torch.Tensor
    segment: torch.Tensor
    members: torch.Tensor


def layout(mask: torch.Tensor) -> Layout:
    """The packing of a (B, T) 0/1 mask whose valid positions come first in each row."""
    B, T = mask.shape
    lengths = mask.sum(1).tolist()
    rows = pack_rows(lengths, T)
    R, M = len(rows), max(len(r) for r in rows)
    row_of, start_of = [0] * B, [0] * B
    members = torch.full((R, M), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for j, i in enumerate(row):
            row_of[i], start_of[i] = r, offset
            members[r, j] = i
            offset += lengths[i]
    src_b = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)])
    src_t = torch.cat([torch.arange(n) for n in lengths])
    dst_r = torch.cat([torch.full((n,), row_of[i], dtype=torch.long) for i, n in enumerate(lengths)])
    dst_t = torch.cat([start_of[i] + torch.arange(n) for i, n in enumerate(lengths)])
    segment = torch.full((R, T), -1, dtype=torch.long)
    segment[dst_r, dst_t] = src_b
    return Layout(rows, lengths, src_b, src_t, dst_r, dst_t, segment, members)


def block_mask(segment: torch.Tensor, key_segment: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (R, 1, T, K): query t of row r sees key k iff both belong to the same example.

    segment: (R, T) example of each query (-1: unused), key_segment: (R, K) example of each key, its last T
    columns being the queries themselves. An unused query sees only itself: no row of all -inf, so no NaN.
    """
    R, T = segment.shape
    K = key_segment.shape[1]
    same = (segment.unsqueeze(2) == key_segment.unsqueeze(1)) & (segment.unsqueeze(2) >= 0)
    itself = torch.zeros(T, K, dtype=torch.bool)
    itself[torch.arange(T), K - T + torch.arange(T)] = True
    same |= itself.unsqueeze(0) & (segment.unsqueeze(2) < 0)
    dtype = dtype if dtype.is_floating_point else torch.float32
    return torch.zeros(R, 1, T, K, dtype=dtype).masked_fill(~same.unsqueeze(1), torch.finfo(dtype).min)


def pool_packed(hidden: torch.Tensor, lay: Layout) -> torch.Tensor:
    """hidden (R, T, h) of the packed rows -> (B, h): the mean over each example's own positions."""
    B = len(lay.lengths)
    sums = hidden.new_zeros(B, hidden.shape[-1]).index_add(0, lay.src_b, hidden[lay.dst_r, lay.dst_t])
    return sums / torch.tensor(lay.lengths, dtype=sums.dtype).clamp(min=1).unsqueeze(1)


def pack_embeds(embeds: torch.Tensor, lay: Layout) -> torch.Tensor:
    """embeds (B, T, d) -> (R, T, d): each example's valid positions at its place in the packed rows."""
    B, T, d = embeds.shape
    R = len(lay.rows)
    return embeds.new_zeros(R, T, d).index_put((lay.dst_r, lay.dst_t), embeds[lay.src_b, lay.src_t])


def packed_mean_pool(model, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden state over each example's own positions, run packed.

    embeds: (B, T, d) inputs_embeds whose valid positions come first in each row (prompt, then
    tokens, then padding), mask: (B, T) 0/1. Returns (B, h), equal to pooling the unpacked batch.
    ``model`` is a Hugging Face encoder with absolute position ids that accepts a 4D additive mask.
    """
    lay = layout(mask)
    position_ids = torch.zeros(lay.segment.shape, dtype=torch.long)
    position_ids[lay.dst_r, lay.dst_t] = lay.src_t
    additive = block_mask(lay.segment, lay.segment, embeds.dtype)
    hidden = model(inputs_embeds=pack_embeds(embeds, lay), attention_mask=additive,
                   position_ids=position_ids).last_hidden_state
    return pool_packed(hidden, lay)


def packed_deep_mean_pool(model, geometry: prefix.PrefixGeometry, prompts: torch.Tensor, embeds: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden state over each example's tokens with a deep prompt, run packed.

    prompts: (B, L, D) deep prompts (example b's key/value prefix in every layer), embeds: (B, T, d) the
    tokens' inputs_embeds, mask: (B, T) 0/1 with the valid tokens first. Returns (B, h), equal to the padded
    deep path (prefix at positions 0..L-1, tokens at L..L+n-1, mean over the tokens). A packed row of M_r
    examples gets a cache of M * L prefix positions (M: the most examples in a row; slot j holds the prefix
    of the row's j-th example, empty slots are zeros that nobody sees), so a row's keys are (M * L + T).
    """
    B, L, D = prompts.shape
    lay = layout(mask)
    R, M = lay.members.shape
    position_ids = torch.zeros(lay.segment.shape, dtype=torch.long)
    position_ids[lay.dst_r, lay.dst_t] = lay.src_t + L
    # row r's prefix: the prompts of its members side by side; index B is an all-zero prompt for empty slots
    prompts = prompts.to(device=embeds.device, dtype=embeds.dtype)
    padded = torch.cat([prompts, prompts.new_zeros(1, L, D)])
    slots = lay.members.masked_fill(lay.members < 0, B)
    row_prefix = padded[slots].reshape(R, M * L, D)
    prefix_segment = lay.members.repeat_interleave(L, dim=1)  # (R, M * L): -1 under empty slots
    additive = block_mask(lay.segment, torch.cat([prefix_segment, lay.segment], 1), embeds.dtype)
    kwargs = {prefix.cache_keyword(model): geometry.cache(row_prefix)}
    hidden = model(inputs_embeds=pack_embeds(embeds, lay), attention_mask=additive, position_ids=position_ids,
                   **kwargs).last_hidden_state
    return pool_packed(hidden, lay)
