"""Stage 3: the encoder. One file, read top to bottom: embeddings → attention → layer → encoder → heads.

Numerically the same network as ``transformers.BertForPreTraining`` and
``BertForSequenceClassification`` (post-LayerNorm BERT, absolute positions, GELU), written for
training speed:

- attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so GPUs use
  FlashAttention / memory-efficient kernels;
- query, key and value are one fused ``qkv`` projection;
- the masked-LM head can take the collator's compact form (flat indices of masked positions) and
  then runs the vocabulary projection **only at masked positions** instead of at every token;
- rows may be packed with several sequences (each attending only to itself, positions restarting),
  and with ``unpad_inputs`` padding costs nothing outside attention: embeddings, projections,
  feed-forward and LayerNorms run on the real tokens only, packed as (tokens, hidden); the ``varlen``
  kernel runs attention on them too (``bertpre/model/attention.py``);
- in pretraining the last layer can run at the masked positions and ``[CLS]`` only (MosaicBERT).

The configuration is a plain ``transformers.BertConfig``; the mapping to Hugging Face parameter
names lives in ``bertpre/model/hf_format.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig

from bertpre.core.configs import ModelConfig
from bertpre.data.masking import IGNORE_INDEX
from bertpre.model.attention import TokenLayout, attend, attend_unpadded

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def bert_config(model: ModelConfig, **extra: object) -> BertConfig:
    """A ``transformers.BertConfig`` from our model config (vanilla ``model_type: bert``)."""
    fields = {k: v for k, v in vars(model).items() if k not in (*ModelConfig.MODERNBERT_ONLY, "architecture")}
    return BertConfig(**{**fields, **extra})


def activation(name: str):  # noqa: ANN201 - a tensor → tensor function
    """The feed-forward activation named in a BERT config."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act: {name!r} is not supported (use one of {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class Embeddings(nn.Module):
    """Word + learned absolute position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                layout: Optional[TokenLayout] = None) -> Tensor:
        """(rows, length, hidden), or (tokens, hidden) of the real tokens when ``layout`` is given (unpadded)."""
        if position_ids is None:  # one sequence per row; packed rows bring positions that restart per sequence
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if layout is not None:
            input_ids, token_type_ids, position_ids = (layout.unpad(t) for t in (input_ids, token_type_ids, position_ids))
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(position_ids)
        return self.dropout(self.norm(x))


# --------------------------------------------------------------------------------------------
# One encoder layer: self-attention and feed-forward, each with a post-LayerNorm residual
# --------------------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """BERT's layer: ``norm(x + attention(x))`` then ``norm(x + ffn(x))``."""

    def __init__(self, config: BertConfig, kernel: str = "sdpa") -> None:
        super().__init__()
        hidden = config.hidden_size
        self.hidden = hidden
        self.num_heads = config.num_attention_heads
        self.head_size = hidden // config.num_attention_heads
        self.kernel = kernel
        self.attention_dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key, value in one matrix multiply
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor, layout: TokenLayout, unpadded: bool = False) -> Tensor:
        """``x`` is (rows, length, hidden), or (tokens, hidden) when ``unpadded``."""
        x = self.attention_norm(x + self.dropout(self.attention_out(self._attention(x, layout, unpadded))))
        return self._feed_forward(x)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))

    def _dropout_p(self) -> float:
        return self.attention_dropout if self.training else 0.0

    def _attention(self, x: Tensor, layout: TokenLayout, unpadded: bool) -> Tensor:
        qkv = self.qkv(x)
        if unpadded and self.kernel == "varlen":  # sequence by sequence on the real tokens: no padding at all
            q, k, v = qkv.view(-1, 3, self.num_heads, self.head_size).unbind(1)
            return attend_unpadded(q, k, v, layout, None, self._dropout_p()).reshape(-1, self.hidden)
        if unpadded:
            qkv = layout.pad(qkv)  # sdpa and flex take the (rows, length) layout
        rows, length, _ = qkv.shape
        # (rows, length, 3, heads, head_size) → three tensors of (rows, heads, length, head_size)
        q, k, v = qkv.view(rows, length, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        context = attend(q, k, v, layout, self.kernel, None, self._dropout_p())
        context = context.transpose(1, 2).reshape(rows, length, self.hidden)
        return layout.unpad(context) if unpadded else context

    def forward_at(self, x: Tensor, layout: TokenLayout, queries: Tensor) -> Tensor:
        """The layer's output at ``queries`` only ((rows, slots) positions of each row, -1 for none), from
        keys and values at every token of ``x`` (rows, length, hidden): MosaicBERT's last-layer saving.
        Returns (rows, slots, hidden); the same numbers as :meth:`forward` at those positions."""
        rows, length, _ = x.shape
        valid = queries >= 0
        index = queries.clamp(min=0)
        x_at = x.gather(1, index[..., None].expand(-1, -1, self.hidden))
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x_at, weight[:self.hidden], bias[:self.hidden])
        kv = F.linear(x, weight[self.hidden:], bias[self.hidden:])
        q = q.view(rows, -1, self.num_heads, self.head_size).transpose(1, 2)
        k, v = kv.view(rows, length, 2, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        ids = layout.sequence_ids
        own = ids.gather(1, index)
        mask = (own[:, :, None] == ids[:, None, :]) & (ids[:, None, :] > 0) & valid[:, :, None]
        mask[:, :, 0] |= ~valid  # an empty slot sees one key: its output is never read
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=self._dropout_p())
        context = context.transpose(1, 2).reshape(rows, -1, self.hidden)
        x_at = self.attention_norm(x_at + self.dropout(self.attention_out(context)))
        return self._feed_forward(x_at)


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


class BertEncoder(nn.Module):
    """Embeddings, the stack of layers and the ``[CLS]`` pooler: BERT without heads.

    Rows may be padded (one sequence each) or packed (several, numbered by ``sequence_ids``, positions
    restarting at each); see ``bertpre/model/attention.py``. With ``unpad_inputs`` everything but attention
    runs on the real tokens only, packed as (tokens, hidden); with the ``varlen`` kernel attention too. The
    result is the same up to float rounding, with zeros instead of meaningless states at padding.
    """

    def __init__(self, config: BertConfig, unpad_inputs: bool = False, pooler: bool = True,
                 attention: str = "sdpa") -> None:
        super().__init__()
        self.unpad_inputs = unpad_inputs or attention == "varlen"  # varlen takes the real tokens only
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, attention) for _ in range(config.num_hidden_layers))
        # A masked-LM-only model has no pooler, as transformers' BertForMaskedLM.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if pooler else None

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                sequence_ids: Optional[Tensor] = None, token_indices: Optional[Tensor] = None,
                cu_seqlens: Optional[Tensor] = None, last_layer_queries: Optional[Tensor] = None) -> Tensor:
        """Hidden states of the last layer, (rows, length, hidden); with ``last_layer_queries`` ((rows, slots)
        positions, -1 for none) the last layer runs at those positions only and gives (rows, slots, hidden)."""
        layout = TokenLayout.of(attention_mask, input_ids, sequence_ids, token_indices, cu_seqlens)
        unpadded = self.unpad_inputs
        x = self.embeddings(input_ids, token_type_ids, position_ids, layout if unpadded else None)
        layers = self.layers if last_layer_queries is None else self.layers[:-1]
        for layer in layers:
            x = layer(x, layout, unpadded)
        x = layout.pad(x) if unpadded else x
        if last_layer_queries is not None:
            return self.layers[-1].forward_at(x, layout, last_layer_queries)
        return x

    def pool(self, hidden_states: Tensor, cls_positions: Optional[Tensor] = None) -> Tensor:
        """``tanh(dense(h[CLS]))``, the sentence representation of the NSP and classification heads: at each
        row's first token, or at ``cls_positions`` (flat indices into the rows, one per sequence)."""
        return torch.tanh(self.pooler(cls_states(hidden_states, cls_positions)))


def cls_states(hidden_states: Tensor, cls_positions: Optional[Tensor]) -> Tensor:
    """The hidden state of every sequence's first token: each row's, or at flat ``cls_positions``."""
    if cls_positions is None:
        return hidden_states[:, 0]
    return hidden_states.flatten(0, 1).index_select(0, cls_positions)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


class MaskedLMHead(nn.Module):
    """dense + activation + LayerNorm, then the decoder tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.word_embeddings = word_embeddings  # shared module: the decoder weight is tied

    def forward(self, hidden_states: Tensor) -> Tensor:
        """Vocabulary logits for each hidden state given (any leading shape)."""
        x = self.norm(self.act(self.transform(hidden_states)))
        return F.linear(x, self.word_embeddings.weight, self.bias)


@dataclass
class PreTrainingOutput:
    """Losses and logits of one pretraining forward pass.

    ``mlm_logits`` are (number of masked positions, vocab) when the compact form or labels were
    given, else (batch, length, vocab) for every position.
    """

    loss: Optional[Tensor]
    mlm_loss: Optional[Tensor]
    nsp_loss: Optional[Tensor]
    mlm_logits: Tensor
    nsp_logits: Optional[Tensor]
    masked_labels: Optional[Tensor] = None
    hidden_states: Optional[Tensor] = None


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence heads; the loss is their sum, as in the reference.

    With ``next_sentence=False`` it is masked-LM only (RoBERTa-style): no pooler, no NSP head, the
    parameters of transformers' ``BertForMaskedLM``. ``attention`` names the kernel (sdpa, flex, varlen).
    """

    def __init__(self, config: BertConfig, unpad_inputs: bool = False, next_sentence: bool = True,
                 attention: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.bert = BertEncoder(config, unpad_inputs, pooler=next_sentence, attention=attention)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.nsp = nn.Linear(config.hidden_size, 2) if next_sentence else None
        init_bert_weights(self, config.initializer_range)

    def token_embeddings(self) -> nn.Embedding:
        """The token embeddings, which the masked-LM decoder shares."""
        return self.bert.embeddings.word

    def output_bias(self) -> nn.Parameter:
        """The masked-LM decoder's bias (one value a token)."""
        return self.mlm.bias

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, masked_positions: Optional[Tensor] = None,
                masked_labels: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                next_sentence_label: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                sequence_ids: Optional[Tensor] = None, cls_positions: Optional[Tensor] = None,
                token_indices: Optional[Tensor] = None, cu_seqlens: Optional[Tensor] = None,
                last_layer_queries: Optional[Tensor] = None, masked_slots: Optional[Tensor] = None,
                cls_slots: Optional[Tensor] = None, **_unused: Tensor) -> PreTrainingOutput:
        """Masked-LM and NSP logits and losses.

        Give either the compact form (``masked_positions``: flat indices into rows × length,
        ``masked_labels``) or dense ``labels`` (-100 where nothing is predicted); either way the
        vocabulary projection runs only at masked positions. With neither, logits come for every
        position (inference, fill-mask). Packed rows bring ``position_ids``, ``sequence_ids`` and
        ``cls_positions`` (see ``bertpre/model/attention.py``); ``last_layer_queries`` with ``masked_slots`` and
        ``cls_slots`` (from ``bertpre/data/packing.py``) run the last layer at masked positions and ``[CLS]`` only.
        """
        hidden = self.bert(input_ids, token_type_ids, attention_mask, position_ids, sequence_ids, token_indices,
                           cu_seqlens, last_layer_queries)
        if last_layer_queries is not None:  # hidden states exist at the queried slots only
            at_slots = hidden.flatten(0, 1)
            cls_hidden = at_slots.index_select(0, cls_slots)
            selected = at_slots.index_select(0, masked_slots)
            hidden = None
        else:
            cls_hidden = cls_states(hidden, cls_positions)
            if masked_positions is None and labels is not None:
                masked_positions = torch.nonzero(labels.flatten() != IGNORE_INDEX).flatten()
                masked_labels = labels.flatten()[masked_positions]
            selected = hidden.flatten(0, 1).index_select(0, masked_positions) if masked_positions is not None else hidden
        nsp_logits = self.nsp(torch.tanh(self.bert.pooler(cls_hidden))) if self.nsp is not None else None
        mlm_logits = self.mlm(selected)
        mlm_loss = nsp_loss = loss = None
        if masked_labels is not None:
            mlm_loss = F.cross_entropy(mlm_logits.float(), masked_labels)
            loss = mlm_loss
        if next_sentence_label is not None and nsp_logits is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label)
            loss = nsp_loss if loss is None else loss + nsp_loss
        return PreTrainingOutput(loss, mlm_loss, nsp_loss, mlm_logits, nsp_logits, masked_labels, hidden)


@dataclass
class ClassificationOutput:
    """Loss (when labels were given) and logits of a classification forward pass."""

    loss: Optional[Tensor]
    logits: Tensor


class BertForSequenceClassification(nn.Module):
    """BERT with pooler + dropout + linear on ``[CLS]``; regression (MSE) when ``num_labels == 1``."""

    def __init__(self, config: BertConfig, unpad_inputs: bool = False, attention: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertEncoder(config, unpad_inputs, attention=attention)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_bert_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, sequence_ids: Optional[Tensor] = None,
                cls_positions: Optional[Tensor] = None, token_indices: Optional[Tensor] = None,
                cu_seqlens: Optional[Tensor] = None, **_unused: Tensor) -> ClassificationOutput:
        """Logits (sequences, num_labels): one per row, or per packed sequence at ``cls_positions``;
        cross-entropy loss for class ids, MSE for regression."""
        hidden = self.bert(input_ids, token_type_ids, attention_mask, position_ids, sequence_ids, token_indices,
                           cu_seqlens)
        logits = self.classifier(self.dropout(self.bert.pool(hidden, cls_positions)))
        return ClassificationOutput(classification_loss(logits, labels), logits)


def classification_loss(logits: Tensor, labels: Optional[Tensor]) -> Optional[Tensor]:
    """Cross-entropy for class ids, MSE for a regression (one output); None without labels."""
    if labels is None:
        return None
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


# --------------------------------------------------------------------------------------------
# Initialisation (BERT's: normal(0, initializer_range), zero biases, LayerNorm ones)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def init_bert_weights(module: nn.Module, std: float) -> None:
    """Initialise every submodule as BERT does; the padding embedding row starts at zero."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.weight.normal_(0.0, std)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.Embedding):
            sub.weight.normal_(0.0, std)
            if sub.padding_idx is not None:
                sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.LayerNorm):
            sub.weight.fill_(1.0)
            sub.bias.zero_()
        elif isinstance(sub, MaskedLMHead):
            sub.bias.zero_()
