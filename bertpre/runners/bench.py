"""`bertpre bench`: full training steps of our model against ``transformers.BertForPreTraining``.

Both models start from the same weights and train on the same batches in the same process, on the
same device and precision (bf16 autocast on GPU), with dropout on, fused AdamW and the same
masking rate; timings follow warm-up steps. The table reports sequences/s, tokens/s, non-padding
tokens/s, MFU and peak memory, and our/reference ratios. Performance is measured here, never
asserted in tests.

With ``curve_steps`` the same models instead train that many steps on distinct real batches (same
weights, batches, masks, optimizer and schedule) and their loss curves are compared against the
reference's own step-to-step noise: the check that a fast path trains like the reference.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from bertpre.core.configs import BenchConfig, ModelConfig
from bertpre.data.dataset import PretrainingData
from bertpre.core.errors import BertpreError
from bertpre.model.flops import gpu_peak_flops, training_flops_per_token
from bertpre.data.masking import MaskingCollator
from bertpre.data.packing import last_layer_queries, pack_lengths
from bertpre.model.architectures import hf_config as model_hf_config
from bertpre.model.architectures import is_modernbert, pretraining_model, to_hf_state_dict
from bertpre.training.optim import learning_rate_factor

Variant = tuple[str, Callable[[], torch.nn.Module], Callable, bool, str]  # name, build, step, compiled, layout


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
    padding_fraction: float = 0.0  # of the slots this variant's batches hold


def _training_examples(config: BenchConfig) -> PretrainingData:
    """The prepared training split of ``config.data``, refused when it holds less than one batch."""
    data = PretrainingData(config.data, "train")
    if len(data) < config.batch_size:
        raise BertpreError(f"{config.data}: {len(data)} examples, fewer than one batch of {config.batch_size}")
    return data


def _environment(config: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Date, device, versions and precision: the header of every report."""
    import transformers

    return {"date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "precision": "bf16 autocast" if device.type == "cuda" and config.bf16 else "fp32"}


def _environment_line(report: dict[str, Any]) -> str:
    return f"{report['date']}  {report['device']}  torch {report['torch']}  transformers {report['transformers']}"


def _batches(config: BenchConfig, vocab_size: int,
             device: torch.device) -> tuple[dict[str, list[dict[str, torch.Tensor]]], str]:
    """Masked batches by layout: synthetic fixed-length padded ones, or real variable-length ones from prepared
    data, padded, and the same sequences packed into rows of the prepared length (with and without the last
    layer's queries)."""
    generator = torch.Generator().manual_seed(0)
    collator = MaskingCollator(vocab_size=vocab_size, mlm_probability=config.mlm_probability)
    batches = []
    layouts: dict[str, list[dict[str, torch.Tensor]]] = {}
    if config.data:
        data = _training_examples(config)
        order = torch.randperm(len(data), generator=generator)
        packed, queried = [], []
        for b in range(min(8, len(data) // config.batch_size)):
            indices = order[b * config.batch_size:(b + 1) * config.batch_size]
            examples = [data.example(int(i)) for i in indices]
            batches.append(collator(examples, generator=generator))
            rows = pack_lengths([len(e["input_ids"]) for e in examples], data.max_seq_length)
            packed.append(collator.pack([[examples[i] for i in row] for row in rows], data.max_seq_length,
                                        generator=generator))
            queried.append({**packed[-1], **last_layer_queries(packed[-1])})
        layouts.update(packed=packed, queried=queried)
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
        width = batches[0]["input_ids"].shape[1]  # the collator pads to a multiple of 8 (tensor cores)
        mode = f"synthetic, {config.seq_length} tokens, " + ("no padding" if width == config.seq_length
                                                             else f"padded to {width}")
    layouts["padded"] = batches
    moved = {layout: [{k: v.to(device, non_blocking=True) for k, v in batch.items()} for batch in group]
             for layout, group in layouts.items()}
    return moved, mode


def _ours_step(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v for k, v in batch.items() if k != "labels"}).loss  # the compact masked-LM form
    return step


def _reference_bert_step(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"],
                     next_sentence_label=batch["next_sentence_label"]).loss
    return step


def _reference_mlm_step(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
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
        sequences += batch["next_sentence_label"].numel()  # one label a sequence, packed or not
        tokens += batch["input_ids"].numel()
        nonpad += int(batch["attention_mask"].sum())
    _synchronize(device)
    seconds = time.perf_counter() - started
    nonpad_rate = nonpad / seconds
    return BenchResult(
        name=name, sequences_per_second=sequences / seconds, tokens_per_second=tokens / seconds,
        nonpad_tokens_per_second=nonpad_rate, mfu=nonpad_rate * flops_per_token / peak if peak else None,
        peak_memory_gb=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        step_ms=1000 * seconds / config.steps, final_loss=float(loss.detach()), padding_fraction=1 - nonpad / tokens)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _device(config: BenchConfig) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")


def _model_variants(config: BenchConfig, hf_config: Any, device: torch.device) -> list[Variant]:
    """The reference and our model in each configuration asked for, all from the same weights: transformers'
    ``BertForPreTraining`` (masked-LM + NSP) or ``ModernBertForMaskedLM`` against ours."""
    import transformers

    modernbert = is_modernbert(hf_config)
    torch.manual_seed(0)
    reference_weights = to_hf_state_dict(pretraining_model(hf_config, next_sentence=not modernbert))

    def fresh_ours(unpad_inputs: bool = False) -> torch.nn.Module:
        torch.manual_seed(0)
        return pretraining_model(hf_config, unpad_inputs=unpad_inputs, next_sentence=not modernbert).to(device)

    def fresh_reference() -> torch.nn.Module:
        reference_config = type(hf_config).from_dict(hf_config.to_dict())
        reference_config._attn_implementation = "sdpa"  # PyTorch SDPA attention, as in REFERENCE.md
        hf_class = transformers.ModernBertForMaskedLM if modernbert else transformers.BertForPreTraining
        model = hf_class(reference_config)
        model.load_state_dict(reference_weights, strict=False)
        model.tie_weights()
        return model.to(device)

    _reference_step = _reference_mlm_step if modernbert else _reference_bert_step
    variants: list[Variant] = [
        ("hf sdpa", fresh_reference, _reference_step, False, "padded"),
        ("bertpre", fresh_ours, _ours_step, False, "padded")]
    if config.compile_reference:
        variants.insert(1, ("hf sdpa + compile", fresh_reference, _reference_step, True, "padded"))
    if config.unpad:
        variants.append(("bertpre + unpad", lambda: fresh_ours(unpad_inputs=True), _ours_step, False, "padded"))
    if config.compile:
        variants.append(("bertpre + compile", fresh_ours, _ours_step, True, "padded"))
    if config.data and config.packing and not config.curve_steps:
        variants.append(("bertpre + packed", fresh_ours, _ours_step, False, "packed"))
        if config.masked_last_layer:
            variants.append(("bertpre + packed + last", fresh_ours, _ours_step, False, "queried"))
        if config.compile:
            variants.append(("bertpre + packed + compile", fresh_ours, _ours_step, True, "packed"))
    return variants


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Time our model and the reference on identical work; return the results and the setup."""
    device = _device(config)
    model_config = ModelConfig.of_size(config.model_size)
    hf_config = model_hf_config(model_config)
    layouts, mode = _batches(config, model_config.vocab_size, device)
    batches = layouts["padded"]
    seq_length = round(sum(batch["input_ids"].shape[1] for batch in batches) / len(batches))  # real batches vary
    flops_per_token = training_flops_per_token(hf_config, seq_length, config.mlm_probability)
    peak = gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    results = []
    for name, build, step_builder, compiled, layout in _model_variants(config, hf_config, device):
        model = build()
        if compiled:  # in place, with dynamic shapes, as `bertpre pretrain --compile true` does
            model.compile(dynamic=True)
        results.append(_time_variant(name, model, step_builder(model), layouts[layout], config, device,
                                     flops_per_token, peak))
        del model
        _release(device)
    nonpad = sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["attention_mask"].numel() for b in batches)
    return {**_environment(config, device),
            "model_size": config.model_size, "batch_size": config.batch_size, "seq_length": seq_length,
            "mode": mode, "padding_fraction": 1 - nonpad, "mflop_per_token": flops_per_token / 1e6,
            "peak_tflops": peak / 1e12 if peak else None, "results": [asdict(r) for r in results]}


def bench_table(report: dict[str, Any]) -> str:
    """The benchmark as a table, with ratios against the eager sdpa reference."""
    reference = next(r for r in report["results"] if r["name"] == "hf sdpa")
    lines = [_environment_line(report),
             f"{_model_name(report['model_size'])}, batch {report['batch_size']} × {report['seq_length']} tokens, "
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


def _model_name(size: str) -> str:
    """``BERT-mini``, ``ModernBERT-mini``: the model a report timed."""
    return f"ModernBERT-{size[len('modernbert-'):]}" if size.startswith("modernbert-") else f"BERT-{size}"


def bench_json(report: dict[str, Any]) -> str:
    """The benchmark for machines."""
    return json.dumps(report, indent=2)


# --------------------------------------------------------------------------------------------
# Loss curves: does a fast path train like the reference?
# --------------------------------------------------------------------------------------------


class _CurveBatches:
    """Step ``i``'s batch: distinct real examples in a seeded order, masked with a seed of its own.

    Every model sees exactly the same batches and masks; nothing is cycled.
    """

    def __init__(self, config: BenchConfig, vocab_size: int, device: torch.device) -> None:
        self.data = _training_examples(config)
        self.order = np.random.default_rng(0).permutation(len(self.data))
        self.collator = MaskingCollator(vocab_size=vocab_size, mlm_probability=config.mlm_probability)
        self.batch_size, self.device = config.batch_size, device

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        positions = (step * self.batch_size + np.arange(self.batch_size)) % len(self.order)
        examples = [self.data.example(int(i)) for i in self.order[positions]]
        batch = self.collator(examples, generator=torch.Generator().manual_seed(1_000_003 + step))
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def _train_curve(model: torch.nn.Module, step_fn: Callable, batches: _CurveBatches, config: BenchConfig,
                 device: torch.device) -> list[float]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01,
                                  fused=device.type == "cuda")
    warmup = max(1, config.curve_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup, config.curve_steps, "linear"))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16)
    losses = []
    for step in range(config.curve_steps):
        with autocast:
            loss = step_fn(batches(step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def compare_curves(reference: list[float], other: list[float], window: int) -> dict[str, Any]:
    """Window means of two loss curves, their largest gap, and the reference's noise.

    The noise is the standard error of a window mean, from the reference's step-to-step scatter
    around its own window means; a gap within three of them is "within noise".
    """
    count = len(reference) // window
    ref = np.asarray(reference[:count * window]).reshape(count, window)
    oth = np.asarray(other[:count * window]).reshape(count, window)
    scatter = float(np.sqrt(((ref - ref.mean(1, keepdims=True)) ** 2).sum() / max(1, ref.size - count)))
    standard_error = scatter / np.sqrt(window)
    gaps = oth.mean(1) - ref.mean(1)
    largest = float(np.abs(gaps).max()) if count else 0.0
    return {"window": window, "reference_means": ref.mean(1).tolist(), "means": oth.mean(1).tolist(),
            "largest_gap": largest, "noise": standard_error,
            "within_noise": bool(largest <= 3 * standard_error + 1e-6)}


def run_loss_curves(config: BenchConfig) -> dict[str, Any]:
    """Train the reference and our variants on identical real batches; compare their loss curves."""
    device = _device(config)
    model_config = ModelConfig.of_size(config.model_size)
    hf_config = model_hf_config(model_config)
    batches = _CurveBatches(config, model_config.vocab_size, device)
    curves = {}
    for name, build, step_builder, compiled, _layout in _model_variants(config, hf_config, device):
        model = build()
        torch.manual_seed(1)  # the same dropout stream to start with (the kernels draw it differently)
        curves[name] = _train_curve(model, step_builder(torch.compile(model) if compiled else model), batches,
                                    config, device)
        del model
        _release(device)
    window = max(1, min(25, config.curve_steps // 6))
    reference = curves["hf sdpa"]
    return {**_environment(config, device),
            "model_size": config.model_size, "batch_size": config.batch_size, "steps": config.curve_steps,
            "learning_rate": config.learning_rate, "data": config.data, "curves": curves,
            "comparisons": {name: compare_curves(reference, curve, window)
                            for name, curve in curves.items() if name != "hf sdpa"}}


def curve_table(report: dict[str, Any]) -> str:
    """The loss-curve comparison as a table of window means, one column per model."""
    names = list(report["curves"])
    first = report["comparisons"][names[1]]
    window = first["window"]
    lines = [_environment_line(report),
             f"{_model_name(report['model_size'])}, batch {report['batch_size']}, {report['steps']} steps on {report['data']}, "
             f"AdamW lr {report['learning_rate']:g}, {report['precision']}; mean loss per {window} steps",
             "",
             f"{'steps':>11} " + " ".join(f"{name:>16}" for name in names)]
    for w, reference_mean in enumerate(first["reference_means"]):
        row = [reference_mean] + [report["comparisons"][name]["means"][w] for name in names[1:]]
        lines.append(f"{w * window + 1:>5}-{(w + 1) * window:<5} " + " ".join(f"{v:>16.4f}" for v in row))
    lines.append("")
    for name in names[1:]:
        c = report["comparisons"][name]
        verdict = "within noise" if c["within_noise"] else "OUTSIDE noise"
        lines.append(f"{name}: largest gap to hf sdpa {c['largest_gap']:.4f} (noise of a window mean "
                     f"{c['noise']:.4f}): {verdict}")
    return "\n".join(lines)
