"""Stage 4: masked-LM + next-sentence pretraining, one explicit loop on Hugging Face Accelerate.

The same code runs on one CPU, one GPU, many GPUs and many nodes (``accelerate launch``,
``torchrun``, SLURM). What makes it dependable:

- the data order is a pure function of (seed, step): every rank computes which sequences it
  reads at a given step, so resuming starts at the right place at once, never replaying data;
- masking is seeded per micro-batch and dropout's RNG state is checkpointed, so a resumed run
  ends bit-identical to an uninterrupted one;
- checkpoints are written to a temporary directory and renamed; SIGTERM/SIGUSR1 (preemption)
  and time budgets save one before stopping; non-finite steps are skipped and counted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from bertpre.config import BertpreError, PretrainConfig, config_to_dict, save_config
from bertpre.data import MaskingCollator, PretrainingData, read_data_metadata
from bertpre.model import BertForPreTraining, bert_config

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8})$")
METRICS_FILE = "metrics.jsonl"

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
    attention scores, and the masked-LM head only at masked positions (≈ 545 MFLOP for BERT-base
    at 128 tokens)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * hidden * hidden + 2 * hidden * config.intermediate_size
    encoder = layers * per_layer + hidden * hidden  # + pooler
    mlm_head = hidden * hidden + config.vocab_size * hidden
    return 6 * encoder + 12 * layers * seq_length * hidden + 6 * mlm_head * mlm_probability


# --------------------------------------------------------------------------------------------
# Data order: which sequences every rank reads at every step
# --------------------------------------------------------------------------------------------


@dataclass
class BatchPlan:
    """Deterministic, resumable data order for data-parallel training with gradient accumulation.

    Step ``s`` consumes ``global_batch_size`` sequences of the epoch's permutation; micro-step
    ``m`` of rank ``r`` reads the slice ``[s·G + (m·W + r)·B, … + B)``. A one-process run with
    accumulation 2 reads the same sequences in a step as a two-process run without accumulation.
    """

    num_examples: int
    global_batch_size: int
    per_device_batch_size: int
    world_size: int
    seed: int
    lengths: Optional[np.ndarray] = None  # set to bucket by length: micro-batches of similar lengths

    def __post_init__(self) -> None:
        if self.num_examples < self.global_batch_size:
            raise BertpreError(f"global_batch_size: {self.global_batch_size} exceeds the {self.num_examples} "
                               "prepared training examples; prepare more data or use a smaller batch")
        self.steps_per_epoch = self.num_examples // self.global_batch_size
        self._cached_epoch = -1
        self._permutation: np.ndarray = np.arange(0)

    @property
    def accumulation_steps(self) -> int:
        """Micro-steps per optimizer step on each rank."""
        return self.global_batch_size // (self.per_device_batch_size * self.world_size)

    def indices(self, step: int, micro_step: int, rank: int) -> np.ndarray:
        """The example indices a rank reads at (step, micro_step)."""
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        if epoch != self._cached_epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._cached_epoch = epoch
        step_start = step_in_epoch * self.global_batch_size
        step_batch = self._permutation[step_start:step_start + self.global_batch_size]
        if self.lengths is not None:
            # Sorting within the step keeps its sequences (and the gradient) and cuts padding.
            step_batch = step_batch[np.argsort(self.lengths[step_batch], kind="stable")]
        start = (micro_step * self.world_size + rank) * self.per_device_batch_size
        return step_batch[start:start + self.per_device_batch_size]


class MicroBatches(torch.utils.data.Dataset):
    """Item ``k`` is this rank's masked micro-batch number ``k`` (= step × accumulation + micro-step).

    Masking draws from a generator seeded by (seed, step, global micro-batch id), so the masks
    do not depend on the number of processes or data-loading workers.
    """

    def __init__(self, data: PretrainingData, plan: BatchPlan, collator: MaskingCollator, rank: int) -> None:
        self.data, self.plan, self.collator, self.rank = data, plan, collator, rank

    def __len__(self) -> int:
        return 2 ** 62  # indexed by micro-batch number; the training loop decides where to stop

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step, micro_step = divmod(k, self.plan.accumulation_steps)
        indices = self.plan.indices(step, micro_step, self.rank)
        examples = [self.data.example(int(i)) for i in indices]
        micro_batch_id = micro_step * self.plan.world_size + self.rank
        generator = torch.Generator().manual_seed(_mix_seed(self.plan.seed, step, micro_batch_id))
        return self.collator(examples, generator=generator)


def _mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def micro_batch_loader(dataset: MicroBatches, start: int, stop: int, num_workers: int) -> Iterator[dict]:
    """Micro-batches ``start … stop-1`` in order, prefetched by worker processes."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, stop), num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
        # its own generator: creating the iterator must not consume the global (dropout) RNG
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if num_workers else None)
    return iter(loader)


# --------------------------------------------------------------------------------------------
# Optimisation
# --------------------------------------------------------------------------------------------


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019), the large-batch optimizer of NVIDIA's BERT recipe.

    Adam moments with bias correction, decoupled weight decay inside the update, then a per-tensor
    trust ratio ``‖w‖ / ‖update‖`` (1 where either norm is zero) scales the learning rate.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102 - torch.optim.Optimizer.step
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"].item()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (exp_avg / (1 - beta1 ** step)) / ((exp_avg_sq / (1 - beta2 ** step)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                weight_norm, update_norm = p.norm(), update.norm()
                trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                                    torch.ones_like(weight_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weight decay on matrices, none on biases and LayerNorm (BERT's rule)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: PretrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or LAMB with BERT's weight-decay groups."""
    groups = parameter_groups(model, config.weight_decay)
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optimizer == "lamb":
        return Lamb(groups, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon)
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon,
                             fused=device.type == "cuda")


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then the chosen decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    """Counters that make a resumed run continue exactly where the saved one stopped."""

    step: int = 0
    tokens_seen: int = 0
    sequences_seen: int = 0
    skipped_steps: int = 0
    consecutive_nonfinite: int = 0
    elapsed_seconds: float = 0.0
    last_eval: dict[str, float] = field(default_factory=dict)
    rank_checksums: list[float] = field(default_factory=list)


def _rank_checksums(accelerator: Any, model: nn.Module) -> list[float]:
    """A checksum of the weights on every process; data parallelism keeps them equal."""
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in accelerator.unwrap_model(model).parameters()]).sum()
    return [float(x) for x in accelerator.gather(local.reshape(1).to(accelerator.device))]


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    directory = Path(output) / "checkpoints"
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)
             and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: p.name)


def _shards_optimizer(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any,
                    state: TrainerState, config: PretrainConfig) -> Path:
    """Write a complete checkpoint atomically (temporary directory, then rename); keep the newest K."""
    from safetensors.torch import save_file

    checkpoints = Path(config.output) / "checkpoints"
    final = checkpoints / f"step-{state.step:08d}"
    staging = checkpoints / f".step-{state.step:08d}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    state.rank_checksums = _rank_checksums(accelerator, model)
    if len(set(state.rank_checksums)) > 1:
        raise BertpreError(f"step {state.step}: processes hold different weights {state.rank_checksums}; "
                           "data-parallel synchronisation failed")
    torch.save(_rng_state(), staging / f"rng-rank{accelerator.process_index}.pt")
    if _shards_optimizer(accelerator):  # each rank holds only its shard of the optimizer state
        torch.save(optimizer.state_dict(), staging / f"optimizer-rank{accelerator.process_index}.pt")
    full_state = accelerator.get_state_dict(model)  # every rank takes part (FSDP gathers shards here)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        weights = {k: v.detach().cpu().contiguous() for k, v in full_state.items()
                   if k != "mlm.word_embeddings.weight"}
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
        if not _shards_optimizer(accelerator):
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), staging / "scaler.pt")
        unwrapped.config.to_json_file(str(staging / "config.json"))
        save_config(config, staging / "pretrain.yaml")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The state file goes last: a directory without it is never taken for a checkpoint.
        (staging / "trainer_state.json").write_text(json.dumps(vars(state), indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(config.output)[:-config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any) -> TrainerState:
    """Restore model, optimizer, scheduler, scaler, this rank's RNG and the counters from ``path``."""
    from safetensors.torch import load_file

    if not (path / "trainer_state.json").exists():
        raise BertpreError(f"{path}: not a complete checkpoint (no trainer_state.json)")
    unwrapped = accelerator.unwrap_model(model)
    missing, unexpected = unwrapped.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    if unexpected or set(missing) - {"mlm.word_embeddings.weight"}:
        raise BertpreError(f"{path}: checkpoint does not fit the model config (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}); resume with the config it was saved with")
    optimizer_file = (path / f"optimizer-rank{accelerator.process_index}.pt" if _shards_optimizer(accelerator)
                      else path / "optimizer.pt")
    if not optimizer_file.exists():
        raise BertpreError(f"{path}: no {optimizer_file.name}; resume with the parallelism it was saved with")
    optimizer.load_state_dict(torch.load(optimizer_file, weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if accelerator.scaler is not None and (path / "scaler.pt").exists():
        accelerator.scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng_file = path / f"rng-rank{accelerator.process_index}.pt"
    if not rng_file.exists():
        raise BertpreError(f"{path}: saved with fewer processes (no {rng_file.name}); an exact resume needs "
                           "the same number of processes")
    _set_rng_state(torch.load(rng_file, weights_only=False))
    return TrainerState(**json.loads((path / "trainer_state.json").read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, data: PretrainingData, collator: MaskingCollator, accelerator: Any,
             batch_size: int, max_batches: int, seed: int) -> dict[str, float]:
    """MLM loss (token-weighted), MLM accuracy, NSP accuracy and perplexity on held-out pairs.

    Masking uses a fixed seed, so evaluations at different steps see the same masked tokens.
    """
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=accelerator.device)  # loss·n, n, correct, nsp ok, pairs
    batches = math.ceil(len(data) / batch_size)
    for index in range(accelerator.process_index, min(batches, max_batches), accelerator.num_processes):
        examples = [data.example(i) for i in range(index * batch_size, min(len(data), (index + 1) * batch_size))]
        batch = collator(examples, generator=torch.Generator().manual_seed(_mix_seed(seed, index)))
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            output = model(**{k: v for k, v in batch.items() if k != "labels"})
        n = batch["masked_labels"].numel()
        totals[0] += output.mlm_loss.double() * n
        totals[1] += n
        totals[2] += (output.mlm_logits.argmax(-1) == batch["masked_labels"]).sum()
        totals[3] += (output.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum()
        totals[4] += len(examples)
    totals = accelerator.reduce(totals, "sum")
    model.train()
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    return {"eval_mlm_loss": loss, "eval_mlm_accuracy": (totals[2] / totals[1].clamp(min=1)).item(),
            "eval_nsp_accuracy": (totals[3] / totals[4].clamp(min=1)).item(),
            "eval_perplexity": math.exp(min(loss, 50.0))}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class _StopRequests:
    """SIGTERM / SIGUSR1 (cluster preemption) ask the loop to checkpoint and stop at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequests":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. a notebook)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True

    def __exit__(self, *_exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class PretrainSummary:
    """How a `pretrain` run ended, printed at the end of the command."""

    output: str
    step: int
    tokens_seen: int
    skipped_steps: int
    stopped_because: str
    last_metrics: dict[str, float]
    last_eval: dict[str, float]
    checkpoint: str
    seconds: float

    def table(self) -> str:
        """Human-readable summary."""
        lines = [f"run              {self.output}", f"steps            {self.step:,}",
                 f"tokens seen      {self.tokens_seen:,}", f"stopped          {self.stopped_because}",
                 f"checkpoint       {self.checkpoint}", f"wall time        {self.seconds:.0f} s"]
        if self.skipped_steps:
            lines.append(f"skipped steps    {self.skipped_steps} (non-finite loss or gradients)")
        for key in ("mlm_loss", "nsp_loss", "mlm_accuracy", "tokens_per_second", "mfu"):
            if key in self.last_metrics:
                lines.append(f"{key:<16} {self.last_metrics[key]:.4g}")
        for key, value in self.last_eval.items():
            lines.append(f"{key:<16} {value:.4g}")
        return "\n".join(lines)


def _make_accelerator(config: PretrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    use_cpu = config.cpu or not torch.cuda.is_available()
    precision = "no" if use_cpu else config.mixed_precision
    return Accelerator(cpu=use_cpu, mixed_precision=precision, log_with="tensorboard",
                       project_config=ProjectConfiguration(project_dir=config.output, logging_dir=config.output))


def _check_data_fits_model(config: PretrainConfig, metadata: dict[str, Any]) -> None:
    vocab = metadata["tokenizer"]["vocab_size"]
    if config.model.vocab_size != vocab:
        raise BertpreError(f"model.vocab_size: {config.model.vocab_size} differs from the tokenizer the data was "
                           f"prepared with ({vocab} tokens, {metadata['tokenizer']['path']}); set "
                           f"--model.vocab-size {vocab}")
    if metadata["max_seq_length"] > config.model.max_position_embeddings:
        raise BertpreError(f"model.max_position_embeddings: {config.model.max_position_embeddings} is shorter "
                           f"than the prepared max_seq_length {metadata['max_seq_length']}")


def _resume_point(config: PretrainConfig) -> Optional[Path]:
    if config.resume == "never":
        return None
    if config.resume == "auto":
        checkpoints = list_checkpoints(config.output)
        return checkpoints[-1] if checkpoints else None
    path = Path(config.resume)
    if not (path / "trainer_state.json").exists():
        raise BertpreError(f"resume: {path} is not a complete checkpoint directory")
    return path


def pretrain(config: PretrainConfig, show_progress: bool = True) -> PretrainSummary:
    """Train ``BertForPreTraining`` on prepared data as ``config`` says; return how it ended."""
    started = time.perf_counter()
    metadata = read_data_metadata(config.data)
    _check_data_fits_model(config, metadata)
    output = Path(config.output)
    if config.resume == "never" and list_checkpoints(output):
        if not config.overwrite:
            raise BertpreError(f"{output}: holds checkpoints of an earlier run; use resume: auto to continue it, "
                               "or --overwrite true to start over")
        shutil.rmtree(output / "checkpoints")
        (output / METRICS_FILE).unlink(missing_ok=True)
    accelerator = _make_accelerator(config)
    world = accelerator.num_processes
    if config.global_batch_size % (config.per_device_batch_size * world):
        raise BertpreError(f"global_batch_size: {config.global_batch_size} is not divisible by "
                           f"per_device_batch_size × processes = {config.per_device_batch_size} × {world}")
    _seed_everything(config.seed)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(metadata["roots"][0]) / "tokenizer")
    collator = MaskingCollator.from_tokenizer(tokenizer, mlm_probability=config.mlm_probability,
                                              whole_word=config.whole_word_mask)
    train_data = PretrainingData(config.data, "train")
    eval_data = _optional_eval_data(config.data)
    plan = BatchPlan(len(train_data), config.global_batch_size, config.per_device_batch_size, world, config.seed,
                     lengths=train_data.lengths() if config.bucket_by_length else None)
    mean_length = float(train_data.lengths().mean())
    total_steps = config.max_steps or math.ceil(config.max_tokens / (config.global_batch_size * mean_length))
    schedule_steps = config.schedule_steps or total_steps

    model = BertForPreTraining(bert_config(config.model), unpad_inputs=config.unpad_inputs)
    optimizer = build_optimizer(model, config, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.warmup_steps, schedule_steps, config.lr_schedule))
    model, optimizer = accelerator.prepare(model, optimizer)
    if config.compile:
        model = torch.compile(model)

    state = TrainerState()
    resume_from = _resume_point(config)
    if resume_from is not None:
        state = load_checkpoint(resume_from, accelerator, model, optimizer, scheduler)
        accelerator.print(f"resumed from {resume_from} at step {state.step}")
        if accelerator.is_main_process:
            _truncate_metrics(output / METRICS_FILE, state.step)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "pretrain.yaml")
    accelerator.init_trackers("tensorboard", config={k: v for k, v in _flat(config_to_dict(config)).items()
                                                     if isinstance(v, (int, float, str, bool))})

    flops_per_token = training_flops_per_token(bert_config(config.model), train_data.max_seq_length,
                                               config.mlm_probability)
    peak = gpu_peak_flops(torch.cuda.get_device_name()) if accelerator.device.type == "cuda" else None
    accumulation = plan.accumulation_steps
    dataset = MicroBatches(train_data, plan, collator, accelerator.process_index)
    batches = micro_batch_loader(dataset, state.step * accumulation, total_steps * accumulation, config.num_workers)
    progress = _progress_bar(show_progress and accelerator.is_local_main_process, state.step, total_steps)
    last_metrics: dict[str, float] = {}
    stopped_because = "max_steps reached"
    window = _ThroughputWindow()
    elapsed_before = state.elapsed_seconds
    run_started = time.perf_counter()
    model.train()
    with _StopRequests() as stop_requests:
        while state.step < total_steps:
            step_metrics = _train_step(model, optimizer, batches, accelerator, accumulation, config)
            scheduler.step()
            _update_state(state, step_metrics, config, world)
            window.add(step_metrics["tokens"] * world, step_metrics["sequences"] * world)
            state.elapsed_seconds = elapsed_before + time.perf_counter() - run_started
            if step_metrics["skipped"]:
                accelerator.print(f"step {state.step}: non-finite loss or gradients, step skipped "
                                  f"({state.consecutive_nonfinite} in a row)")
            progress.update(1)
            if state.step % config.log_every == 0 or state.step == total_steps:
                last_metrics = _log_metrics(accelerator, state, step_metrics, scheduler, window, flops_per_token,
                                            peak, world, config)
                progress.set_postfix(loss=f"{last_metrics['loss']:.3f}", lr=f"{last_metrics['learning_rate']:.2e}",
                                     tok_s=f"{last_metrics['tokens_per_second']:,.0f}")
            if eval_data is not None and config.eval_every and state.step % config.eval_every == 0:
                _run_evaluation(model, eval_data, collator, accelerator, state, config)
                window.reset()  # tokens/s measures training, not evaluation
            reason = _stop_reason(state, config, stop_requests, accelerator, total_steps)
            if state.consecutive_nonfinite >= config.max_nonfinite_steps:
                accelerator.end_training()
                last = list_checkpoints(config.output)
                raise BertpreError(f"stopped after {state.consecutive_nonfinite} non-finite steps in a row at step "
                                   f"{state.step}; the last good checkpoint is {last[-1] if last else 'none'} "
                                   "(lower the learning rate, use bf16 instead of fp16, or check the data)")
            if reason:
                stopped_because = reason
            if reason:
                break
            if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.step < total_steps:
                save_checkpoint(accelerator, model, optimizer, scheduler, state, config)
                window.reset()
    progress.close()
    if eval_data is not None and state.last_eval.get("step") != state.step and not stop_requests.requested:
        _run_evaluation(model, eval_data, collator, accelerator, state, config)
    checkpoints = list_checkpoints(config.output)
    if checkpoints and checkpoints[-1].name == f"step-{state.step:08d}":
        checkpoint = checkpoints[-1]
    else:
        checkpoint = save_checkpoint(accelerator, model, optimizer, scheduler, state, config)
    accelerator.end_training()
    return PretrainSummary(str(output), state.step, state.tokens_seen, state.skipped_steps, stopped_because,
                           last_metrics, {k: v for k, v in state.last_eval.items() if k != "step"},
                           str(checkpoint), time.perf_counter() - started)


def _train_step(model: nn.Module, optimizer: Any, batches: Iterator[dict], accelerator: Any,
                accumulation: int, config: PretrainConfig) -> dict[str, float]:
    """Forward and backward over the micro-batches of one step; gradients sync on the last only."""
    sums = {"mlm_loss": 0.0, "nsp_loss": 0.0, "mlm_correct": 0, "masked": 0, "tokens": 0, "sequences": 0,
            "slots": 0}
    finite = True
    for micro_step in range(accumulation):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
        sync = micro_step == accumulation - 1
        context = contextlib.nullcontext() if sync else accelerator.no_sync(model)
        with context:
            with accelerator.autocast():
                output = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                               attention_mask=batch["attention_mask"], masked_positions=batch["masked_positions"],
                               masked_labels=batch["masked_labels"], next_sentence_label=batch["next_sentence_label"])
            loss = output.loss
            finite &= bool(torch.isfinite(loss.detach()))
            accelerator.backward(loss / accumulation)
        sums["mlm_loss"] += output.mlm_loss.detach().item() / accumulation
        sums["nsp_loss"] += output.nsp_loss.detach().item() / accumulation
        sums["mlm_correct"] += int((output.mlm_logits.detach().argmax(-1) == batch["masked_labels"]).sum())
        sums["masked"] += batch["masked_labels"].numel()
        sums["tokens"] += int(batch["attention_mask"].sum())
        sums["slots"] += batch["attention_mask"].numel()
        sums["sequences"] += batch["input_ids"].shape[0]
    if config.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    grad_norm = float(grad_norm)
    # Every rank sees the same all-reduced gradients, so all make the same decision.
    nonfinite = not (finite and math.isfinite(grad_norm))
    if accelerator.scaler is not None:
        optimizer.step()  # the fp16 loss scaler skips the update itself and lowers the scale
        skipped = bool(optimizer.step_was_skipped)
    else:
        skipped = nonfinite
        if not skipped:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums.update(grad_norm=grad_norm, skipped=skipped, nonfinite=nonfinite)
    return sums


def _update_state(state: TrainerState, metrics: dict[str, float], config: PretrainConfig, world: int) -> None:
    state.step += 1
    state.tokens_seen += metrics["tokens"] * world
    state.sequences_seen += config.global_batch_size
    state.skipped_steps += int(metrics["skipped"])
    state.consecutive_nonfinite = state.consecutive_nonfinite + 1 if metrics["nonfinite"] else 0


class _ThroughputWindow:
    """Tokens and sequences per second since the previous logging step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started, self.tokens, self.sequences = time.perf_counter(), 0, 0

    def add(self, tokens: int, sequences: int) -> None:
        self.tokens += tokens
        self.sequences += sequences

    def rates(self) -> tuple[float, float]:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return self.tokens / seconds, self.sequences / seconds


def _log_metrics(accelerator: Any, state: TrainerState, step: dict[str, float], scheduler: Any,
                 window: _ThroughputWindow, flops_per_token: float, peak: Optional[float], world: int,
                 config: PretrainConfig) -> dict[str, float]:
    tokens_per_second, sequences_per_second = window.rates()
    window.reset()
    if world > 1:  # losses are per-process means of equal-sized batches: average them; counts add up
        local = torch.tensor([step["mlm_loss"], step["nsp_loss"], step["mlm_correct"], step["masked"]],
                             dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, "sum")
        step = {**step, "mlm_loss": total[0].item() / world, "nsp_loss": total[1].item() / world,
                "mlm_correct": total[2].item(), "masked": total[3].item()}
    metrics = {
        "step": state.step, "tokens_seen": state.tokens_seen,
        "loss": step["mlm_loss"] + step["nsp_loss"], "mlm_loss": step["mlm_loss"], "nsp_loss": step["nsp_loss"],
        "mlm_accuracy": step["mlm_correct"] / max(step["masked"], 1), "learning_rate": scheduler.get_last_lr()[0],
        "grad_norm": step["grad_norm"], "tokens_per_second": tokens_per_second,
        "sequences_per_second": sequences_per_second,
        # this rank's share of padding in the step: what --unpad-inputs or --bucket-by-length would save
        "padding_fraction": 1 - step["tokens"] / max(step["slots"], 1), "skipped_steps": state.skipped_steps,
        "elapsed_seconds": state.elapsed_seconds,
    }
    if peak:
        metrics["mfu"] = tokens_per_second * flops_per_token / (peak * world)
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    accelerator.log({f"train/{k}": v for k, v in metrics.items() if k != "step"}, step=state.step)
    if accelerator.is_main_process:
        with open(Path(config.output) / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")
    return metrics


def _run_evaluation(model: nn.Module, eval_data: PretrainingData, collator: MaskingCollator, accelerator: Any,
                    state: TrainerState, config: PretrainConfig) -> None:
    results = evaluate(model, eval_data, collator, accelerator, config.per_device_batch_size,
                       config.eval_batches, config.seed)
    state.last_eval = {**results, "step": state.step}
    accelerator.log({f"eval/{k[5:]}": v for k, v in results.items()}, step=state.step)
    if accelerator.is_main_process:
        with open(Path(config.output) / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.step, "tokens_seen": state.tokens_seen, **results}) + "\n")


def _stop_reason(state: TrainerState, config: PretrainConfig, stop_requests: _StopRequests, accelerator: Any,
                 total_steps: int) -> str:
    """Why to stop now ('' to go on); every rank gets the same answer."""
    flags = torch.tensor([
        float(stop_requests.requested),
        float(config.max_minutes is not None and state.elapsed_seconds >= config.max_minutes * 60),
        float(config.max_tokens is not None and state.tokens_seen >= config.max_tokens),
    ], device=accelerator.device)
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, "max")
    if flags[0]:
        return "stop signal (SIGTERM/SIGUSR1): checkpoint saved"
    if flags[1]:
        return "max_minutes reached"
    if flags[2]:
        return "max_tokens reached"
    return ""


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from; they will be written again."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _optional_eval_data(path: str) -> Optional[PretrainingData]:
    try:
        data = PretrainingData(path, "eval")
    except BertpreError:
        return None
    return data if len(data) else None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _progress_bar(enabled: bool, initial: int, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="pretrain", unit="step", dynamic_ncols=True)


