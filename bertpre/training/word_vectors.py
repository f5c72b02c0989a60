"""Word vectors from the training data's co-occurrence counts: a start for BERT's token embeddings.

A small BERT on a small budget spends its first thousands of steps predicting unigram frequencies,
with token embeddings that grow more alike instead of more meaningful. Distributional vectors
(positive pointwise mutual information of tokens within a window, reduced by a truncated SVD;
Levy, Goldberg & Dagan 2015) take seconds on the same pairs and already place ``good`` near
``pleasant`` and ``war`` near ``conflict``: training starts from embeddings that carry meaning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

# Enough text for stable vectors of the frequent tokens, small enough to count in a few seconds
# and a few GiB: a Wikipedia-sized dataset is sampled, whole examples at a time.
MAX_COUNTED_TOKENS = 20_000_000
# Context-distribution smoothing: rare contexts would otherwise get inflated PMI.
CONTEXT_SMOOTHING = 0.75


@dataclass
class WordVectors:
    """One row per vocabulary id; ``seen`` marks the ids that occurred in the counted text."""

    vectors: torch.Tensor
    seen: torch.Tensor
    tokens_counted: int
    window: int

    def describe(self) -> str:
        """One line for the run's output."""
        return (f"token embeddings from co-occurrence (PPMI + SVD, window {self.window}, over {self.tokens_counted:,} tokens): "
                f"{int(self.seen.sum()):,} of {len(self.seen):,} vocabulary ids seen")


def token_stream(offsets: np.ndarray, values: np.ndarray, max_tokens: int = MAX_COUNTED_TOKENS,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of whole examples (all of them, or a seeded sample of about ``max_tokens``) and a mask
    of positions whose right neighbour at distance ``d`` belongs to the same example, as example ids."""
    lengths = np.diff(offsets)
    order = np.arange(len(lengths))
    if lengths.sum() > max_tokens:
        order = np.random.default_rng(seed).permutation(len(lengths))
        order = np.sort(order[:int(np.searchsorted(np.cumsum(lengths[order]), max_tokens)) + 1])
    pieces = [values[offsets[i]:offsets[i + 1]] for i in order]
    ids = np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, dtype=np.int64)
    example = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
    return ids, example


def unigram_log_probabilities(ids: np.ndarray, vocab_size: int, special_ids: set[int],
                              smoothing: float = 0.1) -> torch.Tensor:
    """Log-frequency of each vocabulary id in ``ids`` (add-``smoothing``), special tokens left out.

    Special tokens are never masked-LM targets, so they get the floor of an unseen token.
    """
    counts = np.bincount(ids, minlength=vocab_size)[:vocab_size].astype(np.float64)
    counts[sorted(i for i in special_ids if i < vocab_size)] = 0.0
    smoothed = counts + smoothing
    return torch.from_numpy(np.log(smoothed / smoothed.sum())).float()


def cooccurrence_vectors(ids: np.ndarray, example: np.ndarray, vocab_size: int, dim: int,
                         special_ids: set[int], window: int = 5, scale: float = 0.02,
                         seed: int = 0) -> WordVectors:
    """PPMI-SVD vectors of ``dim`` dimensions for a token stream; unseen ids get N(0, scale²) rows.

    Pairs are counted within ``window`` tokens of each other inside one example, weighted 1/distance,
    special tokens left out. The rows are scaled to standard deviation ``scale`` (BERT's
    ``initializer_range``), so they sit beside the position and segment embeddings as BERT's own would.
    """
    rows, cols, weights = _weighted_pairs(ids, example, special_ids, window)
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(vocab_size, dim, generator=generator) * scale
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    if len(rows) == 0:
        return WordVectors(vectors, seen, len(ids), window)
    matrix, seen_ids = _ppmi_matrix(rows, cols, weights)
    rank = min(dim, len(seen_ids) - 1)
    if rank < 1:
        return WordVectors(vectors, seen, len(ids), window)
    left, singular = _truncated_svd(matrix, rank, seed)
    dense = left * singular.sqrt()
    dense = dense / dense.std().clamp_min(1e-12) * scale
    index = torch.from_numpy(seen_ids)
    seen[index] = True
    if rank < dim:  # fewer distinct tokens than dimensions: the rest stay small and random
        vectors[index, rank:] *= 0.1
    vectors[index, :rank] = dense.float()
    return WordVectors(vectors, seen, len(ids), window)


def _weighted_pairs(ids: np.ndarray, example: np.ndarray, special_ids: set[int],
                    window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    special = np.isin(ids, np.fromiter(special_ids, dtype=np.int64)) if special_ids else np.zeros(len(ids), bool)
    rows, cols, weights = [], [], []
    for distance in range(1, window + 1):
        keep = (example[:-distance] == example[distance:]) & ~special[:-distance] & ~special[distance:]
        left, right = ids[:-distance][keep], ids[distance:][keep]
        rows += [left, right]
        cols += [right, left]
        weights.append(np.full(2 * len(left), 1.0 / distance, dtype=np.float64))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)


def _ppmi_matrix(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Positive PMI between the tokens that occur, as a sparse CSR matrix over them, and their ids."""
    seen_ids = np.flatnonzero(np.bincount(rows))  # pairs are counted both ways: rows hold every token
    compact = np.full(int(seen_ids[-1]) + 1, -1, dtype=np.int64)
    compact[seen_ids] = np.arange(len(seen_ids))
    size = len(seen_ids)
    pairs = torch.sparse_coo_tensor(torch.from_numpy(np.stack([compact[rows], compact[cols]])),
                                    torch.from_numpy(weights), (size, size), check_invariants=False).coalesce()
    row, col = pairs.indices().numpy()
    counts = pairs.values().numpy()
    row_totals = np.bincount(row, weights=counts, minlength=size)
    context = np.bincount(col, weights=counts, minlength=size) ** CONTEXT_SMOOTHING
    pmi = np.log(counts * context.sum() / (row_totals[row] * context[col]))
    positive = pmi > 0
    indices = torch.from_numpy(np.stack([row[positive], col[positive]]))
    values = torch.from_numpy(pmi[positive])
    matrix = torch.sparse_coo_tensor(indices, values, (size, size), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we use only its matrix product
        warnings.simplefilter("ignore", UserWarning)
        return matrix.to_sparse_csr(), seen_ids


def _truncated_svd(matrix: torch.Tensor, rank: int, seed: int, oversample: int = 10,
                   power_iterations: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``rank`` left singular vectors and values of a sparse matrix (randomized SVD, Halko et al. 2011).

    Written out instead of ``torch.svd_lowrank`` because that one is slow on sparse input of a full
    vocabulary (40 s where this takes one), and float64 keeps it the same from run to run.
    """
    size = matrix.shape[1]
    width = min(rank + oversample, size)
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(matrix @ torch.randn(size, width, generator=generator, dtype=torch.float64))
    transposed = matrix.t().to_sparse_csr()
    for _ in range(power_iterations):
        basis, _ = torch.linalg.qr(transposed @ basis)
        basis, _ = torch.linalg.qr(matrix @ basis)
    small = (transposed @ basis).t()  # basisᵀ · matrix, (width × size)
    left, singular, _ = torch.linalg.svd(small, full_matrices=False)
    return (basis @ left)[:, :rank], singular[:rank]
