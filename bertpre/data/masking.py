"""Masked-LM corruption: the collator that pads pretraining examples and masks them, seeded per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from bertpre.data.batching import pad_examples
from bertpre.data.packing import last_layer_queries, packed_batch, unpadded_index
from bertpre.core.configs import SPECIAL_TOKENS
from bertpre.core.errors import BertpreError

IGNORE_INDEX = -100
"""Label of positions without a masked-LM target (PyTorch's cross-entropy default)."""


@dataclass
class MaskingCollator:
    """Pads examples into a batch and masks it for MLM: dynamic, seeded, optionally whole-word.

    Of the non-special tokens, ``mlm_probability`` are chosen (per word with ``whole_word``); of
    those 80% become ``[MASK]``, 10% a random non-special token, 10% stay. The special ids are the
    tokenizer's, wherever they sit (``special_ids``; by default the first ``num_special_tokens``). The batch holds the dense
    ``labels`` (-100 where nothing is predicted) and the compact form: ``masked_positions``
    (flat indices into batch × sequence) and ``masked_labels``. Sequences are padded to the
    longest in the batch, rounded up to ``pad_to_multiple_of``.
    """

    vocab_size: int
    mask_token_id: int = 4
    pad_token_id: int = 0
    num_special_tokens: int = len(SPECIAL_TOKENS)
    special_ids: Optional[tuple[int, ...]] = None
    mlm_probability: float = 0.15
    whole_word: bool = False
    pad_to_multiple_of: int = 8
    continuation: Any = field(default=None, repr=False)  # bool tensor: vocab id → starts with "##"
    last_layer_queries: bool = False  # also say where the last layer must run (masked positions and [CLS])

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs: Any) -> "MaskingCollator":  # noqa: ANN001
        """Ids and the ``##`` continuation table from a BERT tokenizer."""
        import torch

        vocab = tokenizer.get_vocab()
        continuation = torch.zeros(len(tokenizer), dtype=torch.bool)
        for token, index in vocab.items():
            if token.startswith("##") and index < len(continuation):
                continuation[index] = True
        return cls(vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                   pad_token_id=tokenizer.pad_token_id, special_ids=tuple(sorted(set(tokenizer.all_special_ids))),
                   continuation=continuation, **kwargs)

    def __post_init__(self) -> None:
        import torch

        ids = self.special_ids if self.special_ids is not None else tuple(range(self.num_special_tokens))
        self._special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self._special[list(ids)] = True
        # Drawing an index into the ordinary ids keeps the stream of randint(k, vocab) when the
        # specials are the first k ids.
        self._ordinary = torch.nonzero(~self._special).flatten()

    def __call__(self, examples: Sequence[dict[str, Any]], generator: Any = None,
                 mlm_probability: Optional[float] = None) -> dict[str, Any]:
        """Pad and mask ``examples`` with ``generator`` (a seeded ``torch.Generator``), at ``mlm_probability``
        when given (a masking-rate schedule) instead of the collator's own rate."""
        batch = self.pad(examples)
        batch.update(unpadded_index(batch["attention_mask"]))
        return self._masked(batch, generator, mlm_probability)

    def pack(self, rows: Sequence[Sequence[dict[str, Any]]], width: int, generator: Any = None,
             mlm_probability: Optional[float] = None) -> dict[str, Any]:
        """Pack ``rows`` of examples (whole sequences side by side, ``bertpre/data/packing.py``) and mask them;
        ``next_sentence_label`` has one entry per sequence, in the order of ``cls_positions``."""
        import torch

        batch = packed_batch(rows, width, self.pad_token_id)
        batch["next_sentence_label"] = torch.as_tensor([int(e["next_sentence_label"]) for row in rows for e in row],
                                                       dtype=torch.long)
        return self._masked(batch, generator, mlm_probability)

    def _masked(self, batch: dict[str, Any], generator: Any, mlm_probability: Optional[float]) -> dict[str, Any]:
        batch.update(self.mask(batch["input_ids"], generator, mlm_probability))
        if self.last_layer_queries:
            batch.update(last_layer_queries(batch))
        return batch

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack examples into right-padded tensors with their next-sentence labels (no masking)."""
        import torch

        batch = pad_examples(examples, self.pad_token_id, self.pad_to_multiple_of)
        batch["next_sentence_label"] = torch.as_tensor([int(e["next_sentence_label"]) for e in examples],
                                                       dtype=torch.long)
        return batch

    def mask(self, input_ids: Any, generator: Any = None, mlm_probability: Optional[float] = None) -> dict[str, Any]:
        """Choose and corrupt positions of ``input_ids`` (changed in place) at ``mlm_probability`` (by default the
        collator's); return the labels."""
        import torch

        rate = self.mlm_probability if mlm_probability is None else mlm_probability
        original = input_ids.clone()
        candidates = ~self._special[input_ids]
        if self.whole_word:
            chosen = self._choose_whole_words(input_ids, candidates, generator, rate)
        else:
            draws = torch.rand(input_ids.shape, generator=generator)
            chosen = candidates & (draws < rate)
        action = torch.rand(input_ids.shape, generator=generator)
        random_tokens = self._ordinary[torch.randint(0, len(self._ordinary), input_ids.shape, generator=generator)]
        replace_with_mask = chosen & (action < 0.8)
        replace_with_random = chosen & (action >= 0.8) & (action < 0.9)
        input_ids[replace_with_mask] = self.mask_token_id
        input_ids[replace_with_random] = random_tokens[replace_with_random]
        labels = torch.where(chosen, original, torch.full_like(original, IGNORE_INDEX))
        masked_positions = torch.nonzero(chosen.flatten(), as_tuple=False).flatten()
        return {"labels": labels, "masked_positions": masked_positions,
                "masked_labels": original.flatten()[masked_positions]}

    def _choose_whole_words(self, input_ids: Any, candidates: Any, generator: Any, rate: float) -> Any:
        import torch

        if self.continuation is None:
            raise BertpreError("whole-word masking needs the tokenizer's vocabulary; build the collator "
                               "with MaskingCollator.from_tokenizer")
        is_continuation = self.continuation[input_ids.clamp(max=len(self.continuation) - 1)] & candidates
        follows_candidate = torch.zeros_like(candidates)
        follows_candidate[:, 1:] = candidates[:, :-1]
        # A "##" piece right after [SEP] or at a truncated start begins its own word.
        word_start = candidates & (~is_continuation | ~follows_candidate)
        # A word id per token: the running count of word starts; continuation pieces share it.
        word_ids = torch.cumsum(word_start.long().flatten(), 0).view_as(input_ids)
        word_draws = torch.rand(int(word_ids.max().item()) + 1, generator=generator)
        chosen_words = word_draws < rate
        return candidates & chosen_words[word_ids] & (word_ids > 0)
