"""How the tokens of a batch attend to each other: where the sequences lie, and the attention kernels.

A batch reaches the encoder as rows of ``length`` token slots. A row holds one sequence followed by
padding (*padded rows*, BERT's layout) or several whole sequences one after another (*packed rows*);
``sequence_ids`` numbers them within their row (1, 2, …; 0 at padding) and ``position_ids`` restart at
each sequence. A token attends only to the tokens of its own sequence, whatever the layout.

The kernels, all PyTorch's own:

- ``sdpa``: ``scaled_dot_product_attention`` on the rows, with a key-padding mask for padded rows or a
  block-diagonal mask for packed ones (every device, training and inference; the reference);
- ``flex``: flex attention with a block mask, which skips the blocks a mask rules out (CUDA for
  training; on the CPU PyTorch runs it forward only, so there it serves inference);
- ``varlen``: the CUDA variable-length kernel (``torch.nn.attention.varlen``) on the unpadded tokens,
  sequence by sequence through ``cu_seqlens``: no padding anywhere.

A sliding window (the local layers of ModernBERT) restricts any of them further: a token sees the
tokens of its sequence at most ``window // 2`` positions away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from bertpre.core.errors import BertpreError
from bertpre.data.packing import sequence_boundaries

AttentionKernel = Literal["sdpa", "flex", "varlen"]
ATTENTION_KERNELS: tuple[str, ...] = ("sdpa", "flex", "varlen")


@dataclass
class TokenLayout:
    """Where the sequences of a (rows, length) batch lie; built once per forward pass, shared by every layer.

    ``keep`` (flat indices of the real tokens into rows × length) and ``cu_seqlens`` (where each sequence
    starts among the real tokens, then their total) are computed here, when first needed, if the batch does
    not bring them; a data loader computes them ahead, so that a compiled model meets no data-dependent shape.
    """

    rows: int
    length: int
    sequence_ids: Tensor  # (rows, length): 1, 2, … for the sequences of a row, 0 at padding
    packed: bool  # several sequences per row
    masked: bool  # some token must not see another (False: one unpadded sequence per row, no mask)
    given_keep: Optional[Tensor] = None  # (tokens,) flat indices of the real tokens, row by row
    given_cu_seqlens: Optional[Tensor] = None  # (sequences + 1,) int32
    _masks: dict[Any, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, attention_mask: Optional[Tensor], input_ids: Tensor, sequence_ids: Optional[Tensor] = None,
           token_indices: Optional[Tensor] = None, cu_seqlens: Optional[Tensor] = None) -> "TokenLayout":
        """From the batch: padded rows by ``attention_mask`` (1 at real tokens), packed rows by ``sequence_ids``."""
        rows, length = input_ids.shape
        packed = sequence_ids is not None
        masked = packed or attention_mask is not None
        if sequence_ids is None:
            sequence_ids = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).long()
        return cls(rows, length, sequence_ids, packed, masked, token_indices, cu_seqlens)

    @property
    def keep(self) -> Tensor:
        """Flat indices of the real tokens into rows × length, row by row."""
        if self.given_keep is None:
            self.given_keep = torch.nonzero(self.sequence_ids.flatten() > 0).flatten()
        return self.given_keep

    @property
    def cu_seqlens(self) -> Tensor:
        """Where each sequence starts among the real tokens (row by row), then their total; int32."""
        if self.given_cu_seqlens is None:
            self.given_cu_seqlens = sequence_boundaries(self.sequence_ids)
        return self.given_cu_seqlens

    def unpad(self, x: Tensor) -> Tensor:
        """(rows, length, …) → (tokens, …): the real tokens only."""
        return x.flatten(0, 1).index_select(0, self.keep)

    def pad(self, x: Tensor) -> Tensor:
        """(tokens, …) → (rows, length, …), zeros at padding."""
        padded = x.new_zeros((self.rows * self.length, *x.shape[1:])).index_copy(0, self.keep, x)
        return padded.view(self.rows, self.length, *x.shape[1:])

    def sdpa_mask(self, window: Optional[int]) -> Optional[Tensor]:
        """The boolean mask SDPA takes: (rows, 1, 1, length) for padded rows, (rows, 1, length, length) when
        rows are packed or a window applies, None when nothing is masked. Padding queries see themselves (their
        output is never read), so no row of the mask is empty."""
        key = ("sdpa", window)
        if key not in self._masks:
            ids = self.sequence_ids
            if not self.masked and window is None:
                mask = None
            elif not self.packed and window is None:
                mask = (ids > 0)[:, None, None, :]
            else:
                mask = (ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] > 0)
                if window is not None:
                    positions = torch.arange(self.length, device=ids.device)
                    mask &= (positions[:, None] - positions[None, :]).abs() <= window // 2
                mask |= torch.eye(self.length, dtype=torch.bool, device=ids.device)
                mask = mask[:, None]
            self._masks[key] = mask
        return self._masks[key]

    def block_mask(self, heads: int, window: Optional[int]) -> Any:
        """Flex attention's block mask of the same rule as :meth:`sdpa_mask`."""
        key = ("flex", window)
        if key not in self._masks:
            from torch.nn.attention.flex_attention import create_block_mask

            ids = self.sequence_ids

            def same_sequence(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
                allowed = ((ids[b, q] == ids[b, k]) & (ids[b, k] > 0)) | (q == k)
                if window is not None:
                    allowed &= ((q - k).abs() <= window // 2) | (q == k)
                return allowed

            self._masks[key] = create_block_mask(same_sequence, self.rows, None, self.length, self.length,
                                                 device=ids.device)
        return self._masks[key]


def attend(q: Tensor, k: Tensor, v: Tensor, layout: TokenLayout, kernel: str, window: Optional[int],
           dropout: float) -> Tensor:
    """Attention of (rows, heads, length, head_size) queries, keys and values under ``layout``'s masks."""
    if kernel == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        if dropout:
            raise ValueError("flex attention has no attention dropout; set attention_probs_dropout_prob to 0")
        return flex_attention(q, k, v, block_mask=layout.block_mask(q.shape[1], window))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=layout.sdpa_mask(window), dropout_p=dropout)


def attend_unpadded(q: Tensor, k: Tensor, v: Tensor, layout: TokenLayout, window: Optional[int],
                    dropout: float) -> Tensor:
    """The CUDA variable-length kernel on (tokens, heads, head_size) inputs, one sequence at a time."""
    from torch.nn.attention.varlen import varlen_attn

    if dropout:
        raise ValueError("the variable-length kernel has no attention dropout; set attention_probs_dropout_prob to 0")
    half = window // 2 if window is not None else -1
    # the row length bounds every sequence: an upper bound is what the kernel needs, and it is static
    return varlen_attn(q, k, v, layout.cu_seqlens, layout.cu_seqlens, layout.length, layout.length,
                       window_size=(half, half))


def choose_kernel(requested: str, device: torch.device, attention_dropout: float, training: bool) -> str:
    """The kernel to run: ``requested``, or for ``auto`` the CUDA variable-length kernel where it can run (a GPU,
    no attention dropout during training), else SDPA. A kernel the device or the model cannot run is refused
    in one line naming the option."""
    dropout = attention_dropout if training else 0.0
    if requested == "auto":
        return "varlen" if device.type == "cuda" and not dropout and _has_varlen() else "sdpa"
    if requested not in ATTENTION_KERNELS:
        raise BertpreError(f"attention: {requested!r} is not one of auto, {', '.join(ATTENTION_KERNELS)}")
    if requested == "varlen" and (device.type != "cuda" or not _has_varlen()):
        raise BertpreError("attention: varlen runs on CUDA only (torch.nn.attention.varlen); use sdpa or auto here")
    if requested == "flex" and device.type == "cpu" and training:
        raise BertpreError("attention: flex trains on GPUs only (PyTorch runs it forward only on the CPU); use sdpa "
                           "to train here (flex serves predict and evaluation)")
    if requested in ("flex", "varlen") and dropout:
        raise BertpreError(f"attention: {requested} has no attention dropout, and the model's "
                           f"attention_probs_dropout_prob is {attention_dropout}; set it to 0 or use sdpa")
    return requested


def _has_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True
