"""`bertpre bench`: full training steps of our model against ``transformers.BertForPreTraining``.

Both models start from the same weights and train on the same batches in the same process, on the
same device and precision (bf16 autocast on GPU), with dropout on, fused AdamW and the same
masking rate; timings follow warm-up steps. The table reports sequences/s, tokens/s, non-padding
tokens/s, MFU and peak memory, and our/reference ratios. Performance is measured here, never
asserted in tests.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch

from bertpre.config import BenchConfig, BertpreError, ModelConfig
from bertpre.data import MaskingCollator, PretrainingData
from bertpre.export import to_hf_state_dict
from bertpre.model import BertForPreTraining, bert_config
from bertpre.pretrain import gpu_peak_flops, training_flops_per_token


@dataclass
class BenchResult:
    """Throughput and memory of one model variant."""

    name: str
    sequences_per_second: float
    tokens_per_second: float
    nonpad_tokens_per_second: float
    mfu: Optional[float]
    peak_memory_gb: Optional[float]
    step_ms: float
    final_loss: float


def _batches(config: BenchConfig, vocab_size: int, device: torch.device) -> tuple[list[dict[str, torch.Tensor]], str]:
    """Masked batches: synthetic fixed-length ones, or real variable-length ones from prepared data."""
    generator = torch.Generator().manual_seed(0)
    collator = MaskingCollator(vocab_size=vocab_size, mlm_probability=config.mlm_probability)
    batches = []
    if config.data:
        data = PretrainingData(config.data, "train")
        if len(data) < config.batch_size:
            raise BertpreError(f"{config.data}: {len(data)} examples, fewer than one batch of {config.batch_size}")
        order = torch.randperm(len(data), generator=generator)
        for b in range(min(8, len(data) // config.batch_size)):
            indices = order[b * config.batch_size:(b + 1) * config.batch_size]
            batches.append(collator([data.example(int(i)) for i in indices], generator=generator))
        mode = f"real data from {config.data} (max {data.max_seq_length} tokens)"
    else:
        for _ in range(4):
            ids = torch.randint(5, vocab_size, (config.batch_size, config.seq_length), generator=generator)
            ids[:, 0], ids[:, config.seq_length // 2], ids[:, -1] = 2, 3, 3
            types = torch.zeros_like(ids)
            types[:, config.seq_length // 2 + 1:] = 1
            example = [{"input_ids": ids[i].tolist(), "token_type_ids": types[i].tolist(),
                        "next_sentence_label": int(i % 2)} for i in range(config.batch_size)]
            batches.append(collator(example, generator=generator))
        mode = f"synthetic, {config.seq_length} tokens, no padding"
    moved = [{k: v.to(device, non_blocking=True) for k, v in batch.items()} for batch in batches]
    return moved, mode


def _ours_step(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], masked_positions=batch["masked_positions"],
                     masked_labels=batch["masked_labels"], next_sentence_label=batch["next_sentence_label"]).loss
    return step


def _reference_step(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"],
                     next_sentence_label=batch["next_sentence_label"]).loss
    return step


def _time_variant(name: str, model: torch.nn.Module, step_fn: Callable, batches: list[dict[str, torch.Tensor]],
                  config: BenchConfig, device: torch.device, flops_per_token: float,
                  peak: Optional[float]) -> BenchResult:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def train_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast:
            loss = step_fn(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for i in range(config.warmup_steps):
        train_step(batches[i % len(batches)])
    _synchronize(device)
    started = time.perf_counter()
    sequences = tokens = nonpad = 0
    loss = torch.zeros(())
    for i in range(config.steps):
        batch = batches[i % len(batches)]
        loss = train_step(batch)
        sequences += batch["input_ids"].shape[0]
        tokens += batch["input_ids"].numel()
        nonpad += int(batch["attention_mask"].sum())
    _synchronize(device)
    seconds = time.perf_counter() - started
    nonpad_rate = nonpad / seconds
    return BenchResult(
        name=name, sequences_per_second=sequences / seconds, tokens_per_second=tokens / seconds,
        nonpad_tokens_per_second=nonpad_rate, mfu=nonpad_rate * flops_per_token / peak if peak else None,
        peak_memory_gb=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        step_ms=1000 * seconds / config.steps, final_loss=float(loss.detach()))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Time our model and the reference on identical work; return the results and the setup."""
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    model_config = ModelConfig.of_size(config.model_size)
    hf_config = bert_config(model_config)
    batches, mode = _batches(config, model_config.vocab_size, device)
    seq_length = batches[0]["input_ids"].shape[1]
    flops_per_token = training_flops_per_token(hf_config, seq_length, config.mlm_probability)
    peak = gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    torch.manual_seed(0)
    reference_weights = to_hf_state_dict(BertForPreTraining(hf_config))

    def fresh_ours() -> torch.nn.Module:
        torch.manual_seed(0)
        return BertForPreTraining(hf_config).to(device)

    def fresh_reference() -> torch.nn.Module:
        reference_config = transformers.BertConfig.from_dict(hf_config.to_dict())
        reference_config._attn_implementation = "sdpa"  # PyTorch SDPA attention, as in REFERENCE.md
        model = transformers.BertForPreTraining(reference_config)
        model.load_state_dict(reference_weights, strict=False)
        model.tie_weights()
        return model.to(device)

    variants: list[tuple[str, Callable[[], torch.nn.Module], Callable, bool]] = [
        ("hf sdpa", fresh_reference, _reference_step, False), ("bertpre", fresh_ours, _ours_step, False)]
    if config.compile_reference:
        variants.insert(1, ("hf sdpa + compile", fresh_reference, _reference_step, True))
    if config.compile:
        variants.append(("bertpre + compile", fresh_ours, _ours_step, True))
    results = []
    for name, build, step_builder, compiled in variants:
        model = build()
        runnable = torch.compile(model) if compiled else model
        results.append(_time_variant(name, model, step_builder(runnable), batches, config, device,
                                     flops_per_token, peak))
        del model, runnable
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    nonpad = sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["attention_mask"].numel() for b in batches)
    return {"date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "model_size": config.model_size, "batch_size": config.batch_size, "seq_length": seq_length,
            "mode": mode, "padding_fraction": 1 - nonpad, "precision": "bf16 autocast" if device.type == "cuda"
            and config.bf16 else "fp32", "mflop_per_token": flops_per_token / 1e6, "peak_tflops": peak / 1e12 if peak else None,
            "results": [asdict(r) for r in results]}


def bench_table(report: dict[str, Any]) -> str:
    """The benchmark as a table, with ratios against the eager sdpa reference."""
    reference = next(r for r in report["results"] if r["name"] == "hf sdpa")
    lines = [f"{report['date']}  {report['device']}  torch {report['torch']}  transformers {report['transformers']}",
             f"BERT-{report['model_size']}, batch {report['batch_size']} × {report['seq_length']} tokens, "
             f"{report['mode']}, padding {report['padding_fraction']:.1%}, {report['precision']}, "
             f"{report['mflop_per_token']:.0f} MFLOP/token",
             "",
             f"{'model':<20} {'seq/s':>9} {'tokens/s':>11} {'non-pad tok/s':>14} {'MFU':>6} {'peak GB':>8} "
             f"{'× ref seq/s':>11} {'× ref non-pad':>13}"]
    for r in report["results"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        memory = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "n/a"
        lines.append(f"{r['name']:<20} {r['sequences_per_second']:>9,.1f} {r['tokens_per_second']:>11,.0f} "
                     f"{r['nonpad_tokens_per_second']:>14,.0f} {mfu:>6} {memory:>8} "
                     f"{r['sequences_per_second'] / reference['sequences_per_second']:>11.2f} "
                     f"{r['nonpad_tokens_per_second'] / reference['nonpad_tokens_per_second']:>13.2f}")
    return "\n".join(lines)


def bench_json(report: dict[str, Any]) -> str:
    """The benchmark for machines."""
    return json.dumps(report, indent=2)
