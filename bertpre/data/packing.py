"""Packing: several whole sequences side by side in one row of token slots, until rows are full.

A packed batch is rows of ``width`` slots; each row holds whole sequences one after another, then
padding up to ``width`` (only when nothing more fits). Besides ``input_ids``, ``token_type_ids`` and
``attention_mask`` it holds what keeps the sequences apart in the model (``bertpre/model/attention.py``):

- ``position_ids``: positions restarting at 0 at each sequence;
- ``sequence_ids``: 1, 2, … for the sequences of a row, 0 at padding;
- ``cls_positions``: the flat index (into rows × width) of every sequence's first token, in the order of
  the sequences given: NSP and classification read each sequence at its own ``[CLS]``;
- ``token_indices`` and ``cu_seqlens``: the real tokens' flat indices and where each sequence starts
  among them, for the unpadded layout and the variable-length kernel, computed here (on the data
  loader's side) so that the model meets no data-dependent shapes.

Rows are filled by best-fit decreasing: the longest sequence first, each into the fullest row that
still has room. It is deterministic (ties go to the earlier sequence) and leaves little space: rows of
128 slots carry 97-100% real tokens on corpora of short sequences.
"""

from __future__ import annotations

import bisect
from typing import Any, Optional, Sequence

import numpy as np
import torch


def pack_lengths(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group indices into ``lengths`` into rows whose lengths sum to at most ``capacity``.

    Best-fit decreasing: each sequence, longest first, goes into the row with the least room that still
    fits it, else into a new row. Within a row, sequences keep the order they were placed in.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free slots, row number), sorted: the best fit is the first that fits
    for index in order:
        length = int(lengths[index])
        if length > capacity:
            raise ValueError(f"a sequence of {length} tokens does not fit a row of {capacity}")
        at = bisect.bisect_left(room, (length, -1))
        if at < len(room):
            free, row = room.pop(at)
            rows[row].append(index)
        else:
            free, row = capacity, len(rows)
            rows.append([index])
        if free - length > 0:
            bisect.insort(room, (free - length, row))
    return rows


def packed_batch(rows: Sequence[Sequence[dict[str, Any]]], width: int, pad_token_id: int = 0,
                 sequence_order: Optional[Sequence[Sequence[int]]] = None) -> dict[str, torch.Tensor]:
    """Tensors of a packed batch: ``rows[r]`` are the examples (``input_ids``, ``token_type_ids``) of row ``r``.

    ``cls_positions`` follow ``sequence_order`` (for each row, the number each of its examples has among all
    sequences of the batch; by default row by row), so labels given in that order line up with them.
    """
    count = len(rows)
    input_ids = torch.full((count, width), pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((count, width), dtype=torch.long)
    position_ids = torch.zeros((count, width), dtype=torch.long)
    sequence_ids = torch.zeros((count, width), dtype=torch.long)
    total = sum(len(row) for row in rows)
    cls_positions = torch.zeros(total, dtype=torch.long)
    lengths: list[int] = []
    number = 0
    for r, row in enumerate(rows):
        start = 0
        for s, example in enumerate(row):
            ids = np.asarray(example["input_ids"], dtype=np.int64)
            end = start + len(ids)
            if end > width:
                raise ValueError(f"row {r} holds {end} tokens, more than its {width} slots")
            input_ids[r, start:end] = torch.from_numpy(ids)
            token_type_ids[r, start:end] = torch.as_tensor(np.asarray(example["token_type_ids"], dtype=np.int64))
            position_ids[r, start:end] = torch.arange(len(ids))
            sequence_ids[r, start:end] = s + 1
            target = sequence_order[r][s] if sequence_order is not None else number
            cls_positions[target] = r * width + start
            lengths.append(len(ids))
            number += 1
            start = end
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": (sequence_ids > 0).long(),
            "position_ids": position_ids, "sequence_ids": sequence_ids, "cls_positions": cls_positions,
            **unpadded_index(sequence_ids)}


def unpadded_index(sequence_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """``token_indices`` and ``cu_seqlens`` of a batch whose rows are numbered by ``sequence_ids`` (or, for
    padded rows, by the 0/1 attention mask)."""
    flat = sequence_ids.flatten()
    return {"token_indices": torch.nonzero(flat > 0).flatten(), "cu_seqlens": sequence_boundaries(sequence_ids)}


def sequence_boundaries(sequence_ids: torch.Tensor) -> torch.Tensor:
    """``cu_seqlens`` of rows numbered by ``sequence_ids``: the start of every sequence among the real tokens
    (row by row, in order), then their count; int32, as the variable-length kernels take it."""
    flat = sequence_ids.flatten()
    real = flat > 0
    row = torch.arange(sequence_ids.shape[0], device=flat.device).repeat_interleave(sequence_ids.shape[1])
    starts = real & torch.cat([flat.new_ones(1, dtype=torch.bool), (flat[1:] != flat[:-1]) | (row[1:] != row[:-1])])
    rank = torch.cumsum(real.long(), 0) - 1  # each real token's index among the real tokens
    boundaries = torch.cat([rank[starts], real.sum().reshape(1)])
    return boundaries.to(torch.int32)


def pack_examples(examples: Sequence[dict[str, Any]], width: int, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Examples packed into as few rows of ``width`` slots as best-fit decreasing finds; ``cls_positions`` (and so
    any per-example labels) keep the examples' own order."""
    lengths = [len(example["input_ids"]) for example in examples]
    rows = pack_lengths(lengths, width)
    return packed_batch([[examples[i] for i in row] for row in rows], width, pad_token_id, rows)


def last_layer_queries(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Where the last layer must run when only masked positions and ``[CLS]`` are read (MosaicBERT's saving).

    ``last_layer_queries`` (rows, slots) lists, per row, its masked positions and its sequences' ``[CLS]``
    positions (-1 for unused slots); ``masked_slots`` and ``cls_slots`` are the flat indices into rows × slots
    of each masked position (in ``masked_positions`` order) and each ``[CLS]`` (in ``cls_positions`` order).
    """
    rows, width = batch["input_ids"].shape
    cls_positions = batch.get("cls_positions")
    if cls_positions is None:
        cls_positions = torch.arange(rows) * width
    masked = batch["masked_positions"]
    wanted = torch.zeros(rows * width, dtype=torch.bool)
    wanted[masked] = True
    wanted[cls_positions] = True
    flat = torch.nonzero(wanted).flatten()  # row-major: each row's queries in order
    row = flat // width
    per_row = torch.bincount(row, minlength=rows)
    slots = int(per_row.max())
    first = torch.cumsum(per_row, 0) - per_row
    slot = torch.arange(len(flat)) - first[row]
    queries = torch.full((rows, slots), -1, dtype=torch.long)
    queries[row, slot] = flat % width
    slot_of = torch.full((rows * width,), -1, dtype=torch.long)
    slot_of[flat] = row * slots + slot
    return {"last_layer_queries": queries, "masked_slots": slot_of[masked], "cls_slots": slot_of[cls_positions]}
