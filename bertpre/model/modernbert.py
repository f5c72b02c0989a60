"""The ModernBERT encoder. One file, read top to bottom: rotary positions → attention → gated feed-forward →
layer → encoder → heads.

Numerically the same network as ``transformers.ModernBertForMaskedLM`` and
``ModernBertForSequenceClassification`` (Warner et al. 2024): pre-LayerNorm layers without biases, rotary
position embeddings instead of learned ones (a longer base for global layers), a GeGLU feed-forward, and
attention that alternates between global layers (every ``global_attn_every_n_layers``-th, from the first)
and local ones, where a token sees only the tokens at most ``local_attention // 2`` positions away. The
attention runs through ``bertpre/model/attention.py``: padded or packed rows, the SDPA, flex or CUDA
variable-length kernels, the sliding window as a mask of the same kernels.

The configuration is a plain ``transformers.ModernBertConfig`` and the parameters carry its names
(``model.layers.0.attn.Wqkv.weight``, ``head.dense.weight``, …), so a checkpoint needs no conversion to
load in transformers; the decoder is tied to the token embeddings and stored once.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ModernBertConfig

from bertpre.data.masking import IGNORE_INDEX
from bertpre.data.packing import sequence_boundaries
from bertpre.model.attention import TokenLayout, attend, attend_unpadded
from bertpre.model.bert import ClassificationOutput, PreTrainingOutput, activation, classification_loss, cls_states

TIED_KEY = "decoder.weight"
"""The masked-LM decoder shares the token embeddings: the weight is stored once, under the embeddings."""
HEAD_PREFIXES = {"head": "prediction head (head)", "decoder": "masked-LM decoder bias (decoder)",
                 "classifier": "classifier"}
"""Parameter-name prefixes of the parts a checkpoint may lack, with the name a user knows them by."""


# --------------------------------------------------------------------------------------------
# Rotary position embeddings
# --------------------------------------------------------------------------------------------


class RotaryEmbedding(nn.Module):
    """cos and sin of ``position × θ^(-2i/d)`` for a head size ``d``, the rotation RoPE gives queries and keys."""

    def __init__(self, head_size: int, base: float) -> None:
        super().__init__()
        inverse = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float) / head_size))
        self.register_buffer("inverse_frequency", inverse, persistent=False)

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin of shape (*position_ids.shape, head_size), in float32."""
        angles = position_ids[..., None].float() * self.inverse_frequency
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE applied in float32, as the reference does: ``x·cos + rotate_half(x)·sin``."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Attention and the gated feed-forward
# --------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Fused query/key/value projection, RoPE on queries and keys, attention (global or local), output projection."""

    def __init__(self, config: ModernBertConfig, window: Optional[int], kernel: str) -> None:
        super().__init__()
        self.hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.window = window  # None: global
        self.kernel = kernel
        self.dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout)

    def _dropout_p(self) -> float:
        return self.dropout if self.training else 0.0

    def forward(self, x: Tensor, layout: TokenLayout, rope: tuple[Tensor, Tensor], unpadded: bool) -> Tensor:
        """``x`` (rows, length, hidden), or (tokens, hidden) when ``unpadded``; ``rope`` the matching cos and sin."""
        cos, sin = rope
        qkv = self.Wqkv(x)
        if unpadded and self.kernel == "varlen":
            q, k, v = qkv.view(-1, 3, self.num_heads, self.head_size).unbind(1)
            q, k = rotate(q, cos[:, None], sin[:, None]), rotate(k, cos[:, None], sin[:, None])
            context = attend_unpadded(q, k, v, layout, self.window, self._dropout_p()).reshape(-1, self.hidden)
            return self.out_drop(self.Wo(context))
        if unpadded:  # sdpa and flex take the (rows, length) layout
            qkv, cos, sin = layout.pad(qkv), layout.pad(cos), layout.pad(sin)
        rows, length, _ = qkv.shape
        q, k, v = qkv.view(rows, length, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, cos[:, None], sin[:, None]), rotate(k, cos[:, None], sin[:, None])
        context = attend(q, k, v, layout, self.kernel, self.window, self._dropout_p())
        context = context.transpose(1, 2).reshape(rows, length, self.hidden)
        if unpadded:
            context = layout.unpad(context)
        return self.out_drop(self.Wo(context))

    def forward_at(self, x: Tensor, normed: Tensor, layout: TokenLayout, rope: tuple[Tensor, Tensor],
                   queries: Tensor) -> Tensor:
        """Attention output at ``queries`` ((rows, slots) positions, -1 for none) only, from keys and values at
        every token of ``normed`` (rows, length, hidden); ``x`` is unused here but keeps the layer's shape."""
        cos, sin = rope
        rows, length, _ = normed.shape
        valid = queries >= 0
        index = queries.clamp(min=0)
        gather = index[..., None].expand(-1, -1, self.hidden)
        normed_at = normed.gather(1, gather)
        weight, bias = self.Wqkv.weight, self.Wqkv.bias
        q = F.linear(normed_at, weight[:self.hidden], None if bias is None else bias[:self.hidden])
        kv = F.linear(normed, weight[self.hidden:], None if bias is None else bias[self.hidden:])
        q = q.view(rows, -1, self.num_heads, self.head_size).transpose(1, 2)
        k, v = kv.view(rows, length, 2, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        rope_at = [t.gather(1, index[..., None].expand(-1, -1, t.shape[-1])) for t in (cos, sin)]
        q = rotate(q, rope_at[0][:, None], rope_at[1][:, None])
        k = rotate(k, cos[:, None], sin[:, None])
        ids = layout.sequence_ids
        own = ids.gather(1, index)
        mask = (own[:, :, None] == ids[:, None, :]) & (ids[:, None, :] > 0) & valid[:, :, None]
        if self.window is not None:
            positions = torch.arange(length, device=ids.device)
            mask &= (index[:, :, None] - positions[None, None, :]).abs() <= self.window // 2
        mask[:, :, 0] |= ~valid  # an empty slot sees one key: its output is never read
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=self._dropout_p())
        return self.out_drop(self.Wo(context.transpose(1, 2).reshape(rows, -1, self.hidden)))


class GatedFeedForward(nn.Module):
    """GeGLU: ``Wo(act(a) · g)`` with ``a, g`` the two halves of ``Wi(x)``."""

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = activation(config.hidden_activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        """The feed-forward of each token (any leading shape)."""
        value, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(value) * gate))


# --------------------------------------------------------------------------------------------
# One layer: pre-LayerNorm attention and feed-forward, each with a residual
# --------------------------------------------------------------------------------------------


def _layer_norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class EncoderLayer(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``; the first layer reads the embeddings' own LayerNorm.

    (The same class name as BERT's layer, so one FSDP wrap policy, ``EncoderLayer``, shards either model.)
    """

    def __init__(self, config: ModernBertConfig, index: int, kernel: str) -> None:
        super().__init__()
        self.is_global = config.layer_types[index] == "full_attention"
        self.attn_norm = _layer_norm(config) if index else nn.Identity()
        self.attn = SelfAttention(config, None if self.is_global else config.local_attention, kernel)
        self.mlp_norm = _layer_norm(config)
        self.mlp = GatedFeedForward(config)

    def forward(self, x: Tensor, layout: TokenLayout, rope: tuple[Tensor, Tensor], unpadded: bool) -> Tensor:
        """``x`` (rows, length, hidden), or (tokens, hidden) when ``unpadded``."""
        x = x + self.attn(self.attn_norm(x), layout, rope, unpadded)
        return x + self.mlp(self.mlp_norm(x))

    def forward_at(self, x: Tensor, layout: TokenLayout, rope: tuple[Tensor, Tensor], queries: Tensor) -> Tensor:
        """The layer's output at ``queries`` only ((rows, slots), -1 for none): MosaicBERT's last-layer saving.
        ``x`` is (rows, length, hidden); the result (rows, slots, hidden)."""
        x_at = x.gather(1, queries.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1]))
        x_at = x_at + self.attn.forward_at(x, self.attn_norm(x), layout, rope, queries)
        return x_at + self.mlp(self.mlp_norm(x_at))


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, LayerNorm and dropout (positions come from RoPE, inside attention)."""

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = _layer_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embedded tokens of any shape."""
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class ModernBertEncoder(nn.Module):
    """Embeddings, the layers and the final LayerNorm: ModernBERT without heads.

    Rows may be padded or packed (``sequence_ids``, positions restarting at each sequence); with
    ``unpad_inputs`` (or the ``varlen`` kernel) everything but attention runs on the real tokens only.
    """

    def __init__(self, config: ModernBertConfig, unpad_inputs: bool = False, attention: str = "sdpa") -> None:
        super().__init__()
        self.unpad_inputs = unpad_inputs or attention == "varlen"
        head_size = config.hidden_size // config.num_attention_heads
        thetas = {kind: config.rope_parameters[kind]["rope_theta"] for kind in ("full_attention", "sliding_attention")}
        self.embeddings = ModernBertEmbeddings(config)
        self.global_rope = RotaryEmbedding(head_size, thetas["full_attention"])
        self.local_rope = RotaryEmbedding(head_size, thetas["sliding_attention"])
        self.layers = nn.ModuleList(EncoderLayer(config, i, attention) for i in range(config.num_hidden_layers))
        self.final_norm = _layer_norm(config)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                sequence_ids: Optional[Tensor] = None, token_indices: Optional[Tensor] = None,
                cu_seqlens: Optional[Tensor] = None, last_layer_queries: Optional[Tensor] = None) -> Tensor:
        """Hidden states after the final LayerNorm, (rows, length, hidden); with ``last_layer_queries`` the last
        layer runs at those (rows, slots) positions only and the result is (rows, slots, hidden)."""
        layout = TokenLayout.of(attention_mask, input_ids, sequence_ids, token_indices, cu_seqlens)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        unpadded = self.unpad_inputs
        if unpadded:
            input_ids, position_ids = layout.unpad(input_ids), layout.unpad(position_ids)
        x = self.embeddings(input_ids)
        ropes = {True: self.global_rope(position_ids), False: self.local_rope(position_ids)}
        layers = self.layers if last_layer_queries is None else self.layers[:-1]
        for layer in layers:
            x = layer(x, layout, ropes[layer.is_global], unpadded)
        if unpadded:
            x = layout.pad(x)
        if last_layer_queries is not None:
            rope = ropes[self.layers[-1].is_global]
            if unpadded:
                rope = tuple(layout.pad(t) for t in rope)
            x = self.layers[-1].forward_at(x, layout, rope, last_layer_queries)
        return self.final_norm(x)


def mean_states(hidden_states: Tensor, attention_mask: Optional[Tensor], sequence_ids: Optional[Tensor],
                cls_positions: Optional[Tensor], cu_seqlens: Optional[Tensor] = None) -> Tensor:
    """Each sequence's mean hidden state over its own tokens: per row, or per packed sequence (in the order of
    ``cls_positions``)."""
    if sequence_ids is None:
        mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device) if attention_mask is None \
            else attention_mask.to(hidden_states.dtype)
        return (hidden_states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    bounds = (cu_seqlens if cu_seqlens is not None else sequence_boundaries(sequence_ids)).long()
    real = hidden_states.flatten(0, 1)[sequence_ids.flatten() > 0]  # row by row, as cu_seqlens counts them
    sizes = bounds[1:] - bounds[:-1]
    number = torch.repeat_interleave(torch.arange(len(sizes), device=real.device), sizes)
    row_major = real.new_zeros(len(sizes), real.shape[-1]).index_add(0, number, real) / sizes[:, None].to(real.dtype)
    rank = torch.argsort(torch.argsort(cls_positions))  # where each sequence falls in row-major order
    return row_major.index_select(0, rank)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


class PredictionHead(nn.Module):
    """dense + activation + LayerNorm: before the decoder (masked-LM) or the classifier."""

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = activation(config.classifier_activation)
        self.norm = _layer_norm(config)

    def forward(self, x: Tensor) -> Tensor:
        """The transformed hidden states (any leading shape)."""
        return self.norm(self.act(self.dense(x)))


class ModernBertForMaskedLM(nn.Module):
    """ModernBERT with its masked-LM head: prediction head, then the decoder tied to the token embeddings."""

    tied_key = TIED_KEY
    head_prefixes = HEAD_PREFIXES

    def __init__(self, config: ModernBertConfig, unpad_inputs: bool = False, attention: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.model = ModernBertEncoder(config, unpad_inputs, attention)
        self.head = PredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight
        self.nsp = None  # masked-LM only: ModernBERT has no next-sentence head
        init_modernbert_weights(self, config)

    def token_embeddings(self) -> nn.Embedding:
        """The token embeddings, which the decoder shares."""
        return self.model.embeddings.tok_embeddings

    def output_bias(self) -> Optional[nn.Parameter]:
        """The decoder's bias (one value a token), None when the config has none (decoder_bias: false)."""
        return self.decoder.bias

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                masked_positions: Optional[Tensor] = None, masked_labels: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                sequence_ids: Optional[Tensor] = None, token_indices: Optional[Tensor] = None,
                cu_seqlens: Optional[Tensor] = None, last_layer_queries: Optional[Tensor] = None,
                masked_slots: Optional[Tensor] = None, **_unused: Any) -> PreTrainingOutput:
        """Masked-LM logits and loss, computed at masked positions only (the compact form or dense ``labels``);
        with neither, logits for every position (inference, fill-mask). Token types are not read."""
        hidden = self.model(input_ids, attention_mask, position_ids, sequence_ids, token_indices, cu_seqlens,
                            last_layer_queries)
        if last_layer_queries is not None:
            selected = hidden.flatten(0, 1).index_select(0, masked_slots)
            hidden = None
        else:
            if masked_positions is None and labels is not None:
                masked_positions = torch.nonzero(labels.flatten() != IGNORE_INDEX).flatten()
                masked_labels = labels.flatten()[masked_positions]
            selected = hidden.flatten(0, 1).index_select(0, masked_positions) if masked_positions is not None else hidden
        logits = self.decoder(self.head(selected))
        loss = F.cross_entropy(logits.float(), masked_labels) if masked_labels is not None else None
        return PreTrainingOutput(loss, loss, None, logits, None, masked_labels, hidden)


class ModernBertForSequenceClassification(nn.Module):
    """ModernBERT with pooling (``[CLS]`` or the mean of the tokens), the prediction head, dropout and a linear
    classifier; regression (MSE) when ``num_labels == 1``."""

    head_prefixes = HEAD_PREFIXES
    tied_key = None

    def __init__(self, config: ModernBertConfig, unpad_inputs: bool = False, attention: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.model = ModernBertEncoder(config, unpad_inputs, attention)
        self.head = PredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_modernbert_weights(self, config)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, sequence_ids: Optional[Tensor] = None,
                cls_positions: Optional[Tensor] = None, token_indices: Optional[Tensor] = None,
                cu_seqlens: Optional[Tensor] = None, **_unused: Any) -> ClassificationOutput:
        """Logits (sequences, num_labels): one per row, or per packed sequence in the order of ``cls_positions``."""
        hidden = self.model(input_ids, attention_mask, position_ids, sequence_ids, token_indices, cu_seqlens)
        if self.config.classifier_pooling == "mean":
            pooled = mean_states(hidden, attention_mask, sequence_ids, cls_positions, cu_seqlens)
        else:
            pooled = cls_states(hidden, cls_positions)
        logits = self.classifier(self.drop(self.head(pooled)))
        return ClassificationOutput(classification_loss(logits, labels), logits)


# --------------------------------------------------------------------------------------------
# Initialisation (ModernBERT's: truncated normal at ±2σ, output projections scaled down with depth)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def init_modernbert_weights(module: nn.Module, config: ModernBertConfig) -> None:
    """Initialise as the reference: σ for inputs and embeddings, σ/√(2·layers) for projections back into the
    residual stream, hidden^-½ for a classifier; zero biases, LayerNorm weights one."""
    std = config.initializer_range
    out = std / math.sqrt(2.0 * config.num_hidden_layers)
    cutoff = config.initializer_cutoff_factor or 3.0

    def normal(weight: Tensor, sigma: float) -> None:
        nn.init.trunc_normal_(weight, mean=0.0, std=sigma, a=-cutoff * sigma, b=cutoff * sigma)

    for sub in module.modules():
        if isinstance(sub, nn.LayerNorm):
            sub.weight.fill_(1.0)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.Linear) and sub.bias is not None:
            sub.bias.zero_()
    for sub in module.modules():
        if isinstance(sub, ModernBertEmbeddings):
            normal(sub.tok_embeddings.weight, std)
        elif isinstance(sub, SelfAttention):
            normal(sub.Wqkv.weight, std)
            normal(sub.Wo.weight, out)
        elif isinstance(sub, GatedFeedForward):
            normal(sub.Wi.weight, std)
            normal(sub.Wo.weight, out)
        elif isinstance(sub, PredictionHead):
            normal(sub.dense.weight, out)
    if isinstance(module, ModernBertForSequenceClassification):
        normal(module.classifier.weight, config.hidden_size ** -0.5)
