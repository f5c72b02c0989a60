"""Stage 3: the encoder. One file, read top to bottom: embeddings → attention → layer → encoder → heads.

Numerically the same network as ``transformers.BertForPreTraining`` and
``BertForSequenceClassification`` (post-LayerNorm BERT, absolute positions, GELU), written for
training speed:

- attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so GPUs use
  FlashAttention / memory-efficient kernels;
- query, key and value are one fused ``qkv`` projection;
- the masked-LM head can take the collator's compact form (flat indices of masked positions) and
  then runs the vocabulary projection **only at masked positions** instead of at every token;
- optionally (``unpad_inputs``) padding costs nothing outside attention: embeddings, projections,
  feed-forward and LayerNorms run on the real tokens only, packed as (tokens, hidden), and only
  attention sees the (batch, length) layout.

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

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def bert_config(model: ModelConfig, **extra: object) -> BertConfig:
    """A ``transformers.BertConfig`` from our model config (vanilla ``model_type: bert``)."""
    return BertConfig(**{**vars(model), **extra})


def activation(name: str):  # noqa: ANN201 - a tensor → tensor function
    """The feed-forward activation named in a BERT config."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act: {name!r} is not supported (use one of {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


# --------------------------------------------------------------------------------------------
# Unpadding: the real tokens of a right-padded batch, packed
# --------------------------------------------------------------------------------------------


@dataclass
class Padding:
    """Where the real tokens of a padded (batch, length) batch lie, to move between the layouts."""

    keep: Tensor  # flat indices into batch × length of the non-padding tokens
    batch: int
    length: int

    @classmethod
    def of(cls, attention_mask: Tensor) -> "Padding":
        """From a (batch, length) 1/0 mask."""
        return cls(torch.nonzero(attention_mask.flatten()).flatten(), *attention_mask.shape)

    def unpad(self, x: Tensor) -> Tensor:
        """(batch, length, …) → (tokens, …)."""
        return x.flatten(0, 1).index_select(0, self.keep)

    def pad(self, x: Tensor) -> Tensor:
        """(tokens, …) → (batch, length, …), zeros at padding."""
        padded = x.new_zeros((self.batch * self.length, *x.shape[1:])).index_copy(0, self.keep, x)
        return padded.view(self.batch, self.length, *x.shape[1:])


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

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                padding: Optional[Padding] = None) -> Tensor:
        """(batch, length, hidden), or (tokens, hidden) of the real tokens when ``padding`` is given."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if padding is not None:
            input_ids, token_type_ids, positions = (padding.unpad(t) for t in (input_ids, token_type_ids, positions))
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)
        return self.dropout(self.norm(x))


# --------------------------------------------------------------------------------------------
# One encoder layer: self-attention and feed-forward, each with a post-LayerNorm residual
# --------------------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """BERT's layer: ``norm(x + attention(x))`` then ``norm(x + ffn(x))``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = hidden // config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key, value in one matrix multiply
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor, attention_mask: Optional[Tensor], padding: Optional[Padding] = None) -> Tensor:
        """``x`` is (batch, length, hidden), or (tokens, hidden) when ``padding`` says where they lie."""
        x = self.attention_norm(x + self.dropout(self.attention_out(self._attention(x, attention_mask, padding))))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))

    def _attention(self, x: Tensor, attention_mask: Optional[Tensor], padding: Optional[Padding]) -> Tensor:
        qkv = self.qkv(x)
        if padding is not None:
            qkv = padding.pad(qkv)  # attention alone needs the (batch, length) layout
        batch, length, _ = qkv.shape
        # (batch, length, 3, heads, head_size) → three tensors of (batch, heads, length, head_size)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.attention_dropout if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)
        return padding.unpad(context) if padding is not None else context


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


class BertEncoder(nn.Module):
    """Embeddings, the stack of layers and the ``[CLS]`` pooler: BERT without heads.

    With ``unpad_inputs``, padded batches run unpadded (see ``Padding``); the result is the same
    up to float rounding, with zeros instead of meaningless states at padding positions.
    """

    def __init__(self, config: BertConfig, unpad_inputs: bool = False, pooler: bool = True) -> None:
        super().__init__()
        self.unpad_inputs = unpad_inputs
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        # A masked-LM-only model has no pooler, as transformers' BertForMaskedLM.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if pooler else None

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None) -> Tensor:
        """Hidden states of the last layer, (batch, length, hidden)."""
        mask = _attention_bias(attention_mask)
        padding = Padding.of(attention_mask) if self.unpad_inputs and attention_mask is not None else None
        x = self.embeddings(input_ids, token_type_ids, padding)
        for layer in self.layers:
            x = layer(x, mask, padding)
        return padding.pad(x) if padding is not None else x

    def pool(self, hidden_states: Tensor) -> Tensor:
        """``tanh(dense(h[CLS]))``, the sentence representation of the NSP and classification heads."""
        return torch.tanh(self.pooler(hidden_states[:, 0]))


def _attention_bias(attention_mask: Optional[Tensor]) -> Optional[Tensor]:
    """(batch, length) 1/0 padding mask → boolean (batch, 1, 1, length) for SDPA; None means no padding."""
    if attention_mask is None:
        return None
    return attention_mask.bool()[:, None, None, :]


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
    parameters of transformers' ``BertForMaskedLM``.
    """

    def __init__(self, config: BertConfig, unpad_inputs: bool = False, next_sentence: bool = True) -> None:
        super().__init__()
        self.config = config
        self.bert = BertEncoder(config, unpad_inputs, pooler=next_sentence)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.nsp = nn.Linear(config.hidden_size, 2) if next_sentence else None
        init_bert_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, masked_positions: Optional[Tensor] = None,
                masked_labels: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                next_sentence_label: Optional[Tensor] = None, **_unused: Tensor) -> PreTrainingOutput:
        """Masked-LM and NSP logits and losses.

        Give either the compact form (``masked_positions``: flat indices into batch × length,
        ``masked_labels``) or dense ``labels`` (-100 where nothing is predicted); either way the
        vocabulary projection runs only at masked positions. With neither, logits come for every
        position (inference, fill-mask).
        """
        hidden = self.bert(input_ids, token_type_ids, attention_mask)
        nsp_logits = self.nsp(self.bert.pool(hidden)) if self.nsp is not None else None
        if masked_positions is None and labels is not None:
            masked_positions = torch.nonzero(labels.flatten() != IGNORE_INDEX).flatten()
            masked_labels = labels.flatten()[masked_positions]
        if masked_positions is not None:
            selected = hidden.flatten(0, 1).index_select(0, masked_positions)
            mlm_logits = self.mlm(selected)
        else:
            mlm_logits = self.mlm(hidden)
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

    def __init__(self, config: BertConfig, unpad_inputs: bool = False) -> None:
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertEncoder(config, unpad_inputs)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_bert_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                **_unused: Tensor) -> ClassificationOutput:
        """Logits (batch, num_labels); cross-entropy loss for class ids, MSE for regression."""
        hidden = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(self.bert.pool(hidden)))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
        return ClassificationOutput(loss, logits)


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
