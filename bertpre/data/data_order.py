"""Data order for pretraining: which sequences every rank reads at every step, as a pure function of
(seed, step), so a resumed run starts at the right place at once, never replaying data.

Unpacked, a step reads ``global_batch_size`` sequences. Packed, it reads ``global_batch_size`` *rows* of
``max_seq_length`` slots, each filled with whole sequences (``bertpre/data/packing.py``): the rows are
made once for the run, from a seeded shuffle in windows of sequences, and each epoch visits them in a
new order, so a step holds the slots of the unpacked step with (almost) no padding among them."""

from __future__ import annotations

import math
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

    With a batch-size warm-up (``warmup_steps``) a step of the warm-up takes fewer micro-steps — from
    ``warmup_start`` of the accumulation up to all of it, rising linearly — and the next step starts where it
    stopped: the epochs' permutations are read as one stream, so no sequence is skipped or read twice.
    """

    num_examples: int
    global_batch_size: int
    per_device_batch_size: int
    world_size: int
    seed: int
    lengths: Optional[np.ndarray] = None  # set to bucket by length: micro-batches of similar lengths
    packed: Optional[PackedRows] = None  # set to read rows of packed sequences instead of sequences
    warmup_steps: int = 0  # batch-size warm-up: steps over which a step grows to its full accumulation
    warmup_start: float = 0.25  # the share of the full batch the first step reads

    def __post_init__(self) -> None:
        units = len(self.packed) if self.packed is not None else self.num_examples
        if units < self.global_batch_size:  # pretraining's preflight refuses it in the user's words
            raise ValueError(f"a batch of {self.global_batch_size} from {units} examples or rows")
        self.units = units
        self.steps_per_epoch = units // self.global_batch_size
        self._cached_epoch = -1
        self._permutation: np.ndarray = np.arange(0)
        # micro-steps before each warm-up step (and at its end): where a step starts in the stream
        rounds = [self.micro_steps(step) for step in range(self.warmup_steps)]
        self._warmup_offsets = np.concatenate([[0], np.cumsum(rounds, dtype=np.int64)]).astype(np.int64)

    @property
    def accumulation_steps(self) -> int:
        """Micro-steps per optimizer step on each rank, once any batch-size warm-up is over."""
        return self.global_batch_size // (self.per_device_batch_size * self.world_size)

    def micro_steps(self, step: int) -> int:
        """The micro-steps every rank takes at ``step``: the full accumulation after the warm-up, fewer before."""
        full = self.accumulation_steps
        if step >= self.warmup_steps:
            return full
        share = self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        return min(full, max(1, math.ceil(full * share - 1e-9)))

    def first_micro_step(self, step: int) -> int:
        """How many micro-steps (per rank) every step before ``step`` took together."""
        if step <= self.warmup_steps:
            return int(self._warmup_offsets[step])
        return int(self._warmup_offsets[-1]) + (step - self.warmup_steps) * self.accumulation_steps

    def locate(self, micro_step_number: int) -> tuple[int, int]:
        """The (step, micro-step) of a rank's ``micro_step_number``-th micro-batch of the run."""
        warmup_total = int(self._warmup_offsets[-1])
        if micro_step_number >= warmup_total:
            step, micro = divmod(micro_step_number - warmup_total, self.accumulation_steps)
            return self.warmup_steps + step, micro
        step = int(np.searchsorted(self._warmup_offsets, micro_step_number, side="right")) - 1
        return step, micro_step_number - int(self._warmup_offsets[step])

    def indices(self, step: int, micro_step: int, rank: int) -> np.ndarray:
        """The example indices a rank reads at (step, micro_step); packed, the row indices."""
        round_size = self.world_size * self.per_device_batch_size
        step_batch = self._stream(self.first_micro_step(step) * round_size, self.micro_steps(step) * round_size)
        if self.lengths is not None and self.packed is None:
            # Sorting within the step keeps its sequences (and the gradient) and cuts padding.
            step_batch = step_batch[np.argsort(self.lengths[step_batch], kind="stable")]
        start = (micro_step * self.world_size + rank) * self.per_device_batch_size
        return step_batch[start:start + self.per_device_batch_size]

    def _stream(self, start: int, count: int) -> np.ndarray:
        """Units ``start … start+count-1`` of the run's stream: each epoch a new permutation, cut to whole steps."""
        epoch_length = self.steps_per_epoch * self.global_batch_size
        pieces = []
        while count > 0:
            epoch, offset = divmod(start, epoch_length)
            taken = min(count, epoch_length - offset)
            pieces.append(self._epoch_permutation(epoch)[offset:offset + taken])
            start, count = start + taken, count - taken
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.units)
            self._cached_epoch = epoch
        return self._permutation


@dataclass(frozen=True)
class MaskingSchedule:
    """The masked-LM rate of each step: ``start``, moving linearly to ``end`` over ``steps`` (then held)."""

    start: float
    end: Optional[float] = None
    steps: int = 1

    def rate(self, step: int) -> float:
        """The share of tokens chosen for masked-LM at ``step``."""
        if self.end is None:
            return self.start
        return self.start + (self.end - self.start) * min(1.0, step / max(1, self.steps))


class MicroBatches(torch.utils.data.Dataset):
    """Item ``k`` is this rank's masked micro-batch number ``k`` (= step × accumulation + micro-step, once any
    batch-size warm-up is over; ``BatchPlan.locate`` says which), masked at the step's rate of ``masking``.

    Masking draws from a generator seeded by (seed, step, global micro-batch id), so the masks
    do not depend on the number of processes or data-loading workers.
    """

    def __init__(self, data: PretrainingData, plan: BatchPlan, collator: MaskingCollator, rank: int,
                 masking: Optional[MaskingSchedule] = None) -> None:
        self.data, self.plan, self.collator, self.rank = data, plan, collator, rank
        self.masking = masking

    def __len__(self) -> int:
        return 2 ** 62  # indexed by micro-batch number; the training loop decides where to stop

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step, micro_step = self.plan.locate(k)
        indices = self.plan.indices(step, micro_step, self.rank)
        micro_batch_id = micro_step * self.plan.world_size + self.rank
        generator = torch.Generator().manual_seed(mix_seed(self.plan.seed, step, micro_batch_id))
        rate = self.masking.rate(step) if self.masking is not None else None
        packed = self.plan.packed
        if packed is not None:
            rows = [[self.data.example(int(i)) for i in packed.row(int(r))] for r in indices]
            return self.collator.pack(rows, packed.capacity, generator=generator, mlm_probability=rate)
        return self.collator([self.data.example(int(i)) for i in indices], generator=generator, mlm_probability=rate)


def micro_batch_loader(dataset: MicroBatches, start: int, stop: int, num_workers: int) -> Iterator[dict]:
    """Micro-batches ``start … stop-1`` in order, prefetched by worker processes."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, stop), num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
        # its own generator: creating the iterator must not consume the global (dropout) RNG
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if num_workers else None)
    return iter(loader)
