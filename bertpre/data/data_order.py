"""Data order for pretraining: which sequences every rank reads at every step, as a pure function of
(seed, step), so a resumed run starts at the right place at once, never replaying data.

Unpacked, a step reads ``global_batch_size`` sequences. Packed, it reads ``global_batch_size`` *rows* of
``max_seq_length`` slots, each filled with whole sequences (``bertpre/data/packing.py``): the rows are
made once for the run, from a seeded shuffle in windows of sequences, and each epoch visits them in a
new order, so a step holds the slots of the unpacked step with (almost) no padding among them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from bertpre.core.seeding import mix_seed
from bertpre.data.dataset import PretrainingData
from bertpre.data.masking import MaskingCollator
from bertpre.data.packing import pack_lengths

PACKING_WINDOW = 16384
"""Sequences packed together: rows are filled within windows of a shuffled epoch this long (memory and time
stay linear; a window this size leaves rows as full as packing the whole corpus at once)."""


@dataclass
class PackedRows:
    """Every training sequence assigned to a row of ``capacity`` slots: row ``r`` holds
    ``members[offsets[r]:offsets[r + 1]]`` (example indices, in the order they sit in the row)."""

    offsets: np.ndarray
    members: np.ndarray
    capacity: int

    @classmethod
    def of(cls, lengths: np.ndarray, capacity: int, seed: int) -> "PackedRows":
        """Rows filled by best-fit decreasing within windows of a seeded shuffle of the sequences."""
        order = np.random.default_rng([seed, 2**31 - 1]).permutation(len(lengths))
        rows: list[np.ndarray] = []
        for start in range(0, len(order), PACKING_WINDOW):
            window = order[start:start + PACKING_WINDOW]
            rows += [window[row] for row in pack_lengths(lengths[window], capacity)]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(row) for row in rows])
        members = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return cls(offsets, members, capacity)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, index: int) -> np.ndarray:
        """The example indices of row ``index``."""
        return self.members[self.offsets[index]:self.offsets[index + 1]]

    def fill(self, lengths: np.ndarray) -> float:
        """The share of the rows' slots that hold real tokens."""
        return float(lengths.sum() / (len(self) * self.capacity)) if len(self) else 0.0


@dataclass
class BatchPlan:
    """Deterministic, resumable data order for data-parallel training with gradient accumulation.

    Step ``s`` consumes ``global_batch_size`` sequences of the epoch's permutation; micro-step
    ``m`` of rank ``r`` reads the slice ``[s·G + (m·W + r)·B, … + B)``. A one-process run with
    accumulation 2 reads the same sequences in a step as a two-process run without accumulation.
    """

    num_examples: int
    global_batch_size: int
    per_device_batch_size: int
    world_size: int
    seed: int
    lengths: Optional[np.ndarray] = None  # set to bucket by length: micro-batches of similar lengths
    packed: Optional[PackedRows] = None  # set to read rows of packed sequences instead of sequences

    def __post_init__(self) -> None:
        units = len(self.packed) if self.packed is not None else self.num_examples
        if units < self.global_batch_size:  # pretraining's preflight refuses it in the user's words
            raise ValueError(f"a batch of {self.global_batch_size} from {units} examples or rows")
        self.steps_per_epoch = units // self.global_batch_size
        self._cached_epoch = -1
        self._permutation: np.ndarray = np.arange(0)

    @property
    def accumulation_steps(self) -> int:
        """Micro-steps per optimizer step on each rank."""
        return self.global_batch_size // (self.per_device_batch_size * self.world_size)

    def indices(self, step: int, micro_step: int, rank: int) -> np.ndarray:
        """The example indices a rank reads at (step, micro_step); packed, the row indices."""
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        if epoch != self._cached_epoch:
            units = len(self.packed) if self.packed is not None else self.num_examples
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(units)
            self._cached_epoch = epoch
        step_start = step_in_epoch * self.global_batch_size
        step_batch = self._permutation[step_start:step_start + self.global_batch_size]
        if self.lengths is not None and self.packed is None:
            # Sorting within the step keeps its sequences (and the gradient) and cuts padding.
            step_batch = step_batch[np.argsort(self.lengths[step_batch], kind="stable")]
        start = (micro_step * self.world_size + rank) * self.per_device_batch_size
        return step_batch[start:start + self.per_device_batch_size]


class MicroBatches(torch.utils.data.Dataset):
    """Item ``k`` is this rank's masked micro-batch number ``k`` (= step × accumulation + micro-step).

    Masking draws from a generator seeded by (seed, step, global micro-batch id), so the masks
    do not depend on the number of processes or data-loading workers.
    """

    def __init__(self, data: PretrainingData, plan: BatchPlan, collator: MaskingCollator, rank: int) -> None:
        self.data, self.plan, self.collator, self.rank = data, plan, collator, rank

    def __len__(self) -> int:
        return 2 ** 62  # indexed by micro-batch number; the training loop decides where to stop

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step, micro_step = divmod(k, self.plan.accumulation_steps)
        indices = self.plan.indices(step, micro_step, self.rank)
        micro_batch_id = micro_step * self.plan.world_size + self.rank
        generator = torch.Generator().manual_seed(mix_seed(self.plan.seed, step, micro_batch_id))
        packed = self.plan.packed
        if packed is not None:
            rows = [[self.data.example(int(i)) for i in packed.row(int(r))] for r in indices]
            return self.collator.pack(rows, packed.capacity, generator=generator)
        return self.collator([self.data.example(int(i)) for i in indices], generator=generator)


def micro_batch_loader(dataset: MicroBatches, start: int, stop: int, num_workers: int) -> Iterator[dict]:
    """Micro-batches ``start … stop-1`` in order, prefetched by worker processes."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, stop), num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
        # its own generator: creating the iterator must not consume the global (dropout) RNG
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if num_workers else None)
    return iter(loader)
