"""FLOPs per training token and GPU peaks: what MFU is measured against."""

from __future__ import annotations

from typing import Any, Optional

# Dense bf16 tensor-core peak per GPU, FLOP/s, for MFU (datasheet numbers, without sparsity).
GPU_PEAK_FLOPS = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
    "H100": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "A10G": 125e12, "A10": 125e12,
    "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12,
}


def gpu_peak_flops(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a GPU from its name (longest matching key), or None if unknown."""
    matches = [key for key in GPU_PEAK_FLOPS if key.lower() in device_name.lower()]
    return GPU_PEAK_FLOPS[max(matches, key=len)] if matches else None


def training_flops_per_token(config: Any, seq_length: int, mlm_probability: float) -> float:
    """Useful training FLOPs per token: 6 × non-embedding parameters of the encoder, 12·L·S·d for
    attention scores (a local layer of ModernBERT scores its window only), and the masked-LM head only at
    masked positions (≈ 545 MFLOP for BERT-base at 128 tokens)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    if getattr(config, "model_type", "bert") == "modernbert":  # GeGLU: an input projection twice as wide, no pooler
        encoder = layers * (4 * hidden * hidden + 3 * hidden * config.intermediate_size)
        seen = [seq_length if kind == "full_attention" else min(seq_length, config.local_attention + 1)
                for kind in config.layer_types]
    else:
        encoder = layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size) + hidden * hidden
        seen = [seq_length] * layers
    mlm_head = hidden * hidden + config.vocab_size * hidden
    return 6 * encoder + 12 * sum(seen) * hidden + 6 * mlm_head * mlm_probability
