"""Deterministic seeds and hashes: the same value in every process, on every machine, for any worker count."""

from __future__ import annotations

import hashlib

import numpy as np


def stable_hash64(text: str) -> int:
    """A 64-bit hash of ``text``, the same in every process and on every machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (a seed, a step, a batch id …), well mixed."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)
