"""Stacking token sequences of different lengths into batches: right-padded rows, or packed ones."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch


def pad_examples(examples: Sequence[dict[str, Any]], pad_token_id: int = 0,
                 multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """``input_ids``, ``token_type_ids`` and ``attention_mask``, right-padded to the longest example
    rounded up to ``multiple_of`` (not to a fixed length)."""
    longest = max(len(e["input_ids"]) for e in examples)
    length = int(math.ceil(longest / multiple_of) * multiple_of)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(examples), length), dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.as_tensor(np.asarray(example["input_ids"], dtype=np.int64))
        token_type_ids[row, :n] = torch.as_tensor(np.asarray(example["token_type_ids"], dtype=np.int64))
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


def rows_batch(examples: Sequence[dict[str, Any]], pad_token_id: int = 0, packing: bool = False,
               multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Examples as one batch: each right-padded to the longest rounded up to ``multiple_of``, or, with ``packing``,
    side by side in as few rows of that width as they fit (``bertpre/data/packing.py``); either way each
    example's ``[CLS]`` is found (``cls_positions`` when packed) in the examples' own order."""
    if not packing:
        return pad_examples(examples, pad_token_id, multiple_of)
    from bertpre.data.packing import pack_examples

    longest = max(len(e["input_ids"]) for e in examples)
    return pack_examples(examples, int(math.ceil(longest / multiple_of) * multiple_of), pad_token_id)
