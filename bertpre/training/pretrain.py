"""Stage 4, `bertpre pretrain`: masked-LM + next-sentence pretraining, one explicit loop on Accelerate.

The same code runs on one CPU, one GPU, many GPUs and many nodes (``accelerate launch``,
``torchrun``, SLURM). What makes it dependable:

- the data order is a pure function of (seed, step) (``bertpre/data/data_order.py``): every rank
  computes which sequences it reads at a given step, so resuming starts at the right place at
  once, never replaying data;
- masking is seeded per micro-batch and dropout's RNG state is checkpointed, so a resumed run
  ends bit-identical to an uninterrupted one;
- checkpoints (``bertpre/training/checkpoint.py``) are written to a temporary directory and renamed;
  SIGTERM/SIGUSR1 (preemption) and time budgets save one before stopping; non-finite steps are
  skipped and counted.

``pretrain`` is three steps: ``build`` (data, model, optimizer, resume), ``fit`` (the loop) and
``finish`` (final evaluation and checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from bertpre.core.config import config_to_dict, save_config
from bertpre.core.configs import PretrainConfig
from bertpre.core.errors import BertpreError
from bertpre.core.io import remove_output
from bertpre.core.metrics_log import METRICS_FILE, append_metrics, truncate_metrics
from bertpre.core.seeding import mix_seed
from bertpre.data.data_order import BatchPlan, MaskingSchedule, MicroBatches, micro_batch_loader
from bertpre.data.dataset import PretrainingData
from bertpre.data.masking import MaskingCollator
from bertpre.data.metadata import data_fingerprint
from bertpre.model.attention import choose_kernel
from bertpre.model.architectures import attention_dropout, from_hf_state_dict, pretraining_model
from bertpre.model.flops import gpu_peak_flops, training_flops_per_token
from bertpre.model.hf_directory import load_encoder_weights, read_safetensors
from bertpre.training.accelerator import (describe_precision, finish_trackers, locked_output, make_accelerator,
                                         start_trackers)
from bertpre.training.checkpoint import (CHECKPOINTS_DIR, RUN_CONFIG_FILE, TrainerState, checkpoint_name, is_complete,
                                         list_checkpoints, load_checkpoint, read_checkpoint_weights, save_checkpoint)
from bertpre.training.optim import BudgetSchedule, Decay, build_optimizer, build_scheduler
from bertpre.training.preemption import REQUEUE_SIGNAL, StopRequests, requeue_after_stop, stop_signal_from_flags
from bertpre.training.preflight import masking_steps, preflight
from bertpre.training.sharding import refuse_unsupported_fsdp
from bertpre.training.word_vectors import cooccurrence_vectors, token_stream, unigram_log_probabilities


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
    with_nsp = accelerator.unwrap_model(model).nsp is not None
    limit = min(math.ceil(len(data) / batch_size), max_batches)
    for index, counts in evaluation_batches(limit, accelerator.process_index, accelerator.num_processes):
        examples = [data.example(i) for i in range(index * batch_size, min(len(data), (index + 1) * batch_size))]
        batch = collator(examples, generator=torch.Generator().manual_seed(mix_seed(seed, index)))
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            output = model(**{k: v for k, v in batch.items() if k != "labels"})
        if not counts:
            continue
        n = batch["masked_labels"].numel()
        totals[0] += output.mlm_loss.double() * n
        totals[1] += n
        totals[2] += (output.mlm_logits.argmax(-1) == batch["masked_labels"]).sum()
        if with_nsp:
            totals[3] += (output.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum()
        totals[4] += len(examples)
    totals = accelerator.reduce(totals, "sum")
    model.train()
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    results = {"eval_mlm_loss": loss, "eval_mlm_accuracy": (totals[2] / totals[1].clamp(min=1)).item(),
               "eval_perplexity": math.exp(min(loss, 50.0))}
    if with_nsp:
        results["eval_nsp_accuracy"] = (totals[3] / totals[4].clamp(min=1)).item()
    return results


def evaluation_batches(limit: int, rank: int, world: int) -> list[tuple[int, bool]]:
    """The held-out batches process ``rank`` of ``world`` evaluates, one per forward pass, and whether each counts.

    Batches ``0 .. limit-1`` are dealt round-robin, and every process makes the same number of passes,
    ceil(limit / world): under FSDP each forward pass is a collective (the parameters' all-gather), so a
    process with no batch left re-runs batch 0 without counting it rather than leave the others waiting.
    """
    passes = math.ceil(limit / world)
    return [(index, True) if index < limit else (0, False) for index in range(rank, passes * world, world)]


# --------------------------------------------------------------------------------------------
# The run: build, fit, finish
# --------------------------------------------------------------------------------------------


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
    stop_signal: str = ""  # 'SIGTERM' / 'SIGUSR1' when a signal stopped the run
    requeued: bool = False  # its SLURM job was requeued (bertpre/training/preemption.py)
    precision: str = ""  # the accelerator's mixed_precision: no, bf16, fp16
    main_process: bool = True  # False on the other ranks of a multi-process run: they print no summary

    def table(self) -> str:
        """Human-readable summary."""
        lines = [f"run              {self.output}", f"steps            {self.step:,}",
                 f"tokens seen      {self.tokens_seen:,}", f"stopped          {self.stopped_because}",
                 f"checkpoint       {self.checkpoint}", f"wall time        {self.seconds:.0f} s"]
        if self.precision:
            lines.append(f"precision        {describe_precision(self.precision)}")
        if self.stop_signal:
            lines.append("resume           " + ("the requeued SLURM job resumes from the checkpoint" if self.requeued
                                              else "run the same command again (resume: auto)"))
        if self.skipped_steps:
            lines.append(f"skipped steps    {self.skipped_steps} (non-finite loss or gradients)")
        for key in ("mlm_loss", "nsp_loss", "mlm_accuracy", "tokens_per_second", "mfu"):
            if key in self.last_metrics:
                lines.append(f"{key:<16} {self.last_metrics[key]:.4g}")
        for key, value in self.last_eval.items():
            lines.append(f"{key:<16} {value:.4g}")
        return "\n".join(lines)


@dataclass
class _Run:
    """Everything the loop works with, made once by :func:`build`."""

    config: PretrainConfig
    accelerator: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    collator: MaskingCollator
    eval_collator: MaskingCollator  # the fixed evaluation rate, not the training one
    train_data: PretrainingData
    eval_data: Optional[PretrainingData]
    plan: BatchPlan
    total_steps: int
    state: TrainerState
    flops_per_token: float
    peak_flops: Optional[float]
    masking: Optional[MaskingSchedule] = None  # the training masking rate of each step
    started_at_step: int = 0


def pretrain(config: PretrainConfig, show_progress: bool = True,
             stop_requests: Optional[StopRequests] = None) -> PretrainSummary:
    """Train the masked-LM (+ NSP) model on prepared data as ``config`` says; return how it ended.

    A stop signal (SIGTERM/SIGUSR1) stops it after the next step with a checkpoint; pass
    ``stop_requests`` already entered to catch signals from before the call (the CLI does, while torch loads).
    """
    started = time.perf_counter()
    # a signal while the run starts (data, model, resume) or writes its last checkpoint is kept, never fatal
    with contextlib.nullcontext(stop_requests) if stop_requests is not None else StopRequests() as requests:
        with locked_output(config.output, config.runtime.cpu):  # one writer of the run directory
            run = build(config)
            stopped_because, last_metrics, stop_signal = fit(run, requests, show_progress)
            return finish(run, stopped_because, last_metrics, stop_signal, started)


def build(config: PretrainConfig) -> _Run:
    """Check everything (:func:`preflight`, which writes nothing), then clear an earlier run if asked, and make
    the accelerator, data, model, optimizer and schedule, restoring the newest checkpoint when resuming."""
    checked = preflight(config)
    config, metadata, bert = checked.config, checked.metadata, checked.bert
    train_data, eval_data, resume_from = checked.train_data, checked.eval_data, checked.resume_from
    output = Path(config.output)
    accelerator = make_accelerator(config.output, config.runtime.cpu, config.runtime.mixed_precision,
                                   report_to=config.logging.report_to)
    refuse_unsupported_fsdp(accelerator)  # the launcher's config, known once the accelerator exists
    if checked.clear_earlier_run and accelerator.is_main_process:  # every check has passed
        remove_output(output / CHECKPOINTS_DIR)  # a linked checkpoints/ loses its link, never its target's files
        (output / METRICS_FILE).unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    # the precision it trains in (the option, the launcher's or the default), as saved and reported
    config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                     mixed_precision=accelerator.mixed_precision))
    batches, world = config.batches, accelerator.num_processes
    if world != checked.world_size:  # preflight asked the launcher's environment; the accelerator must agree
        raise RuntimeError(f"{world} processes, where the launcher's environment said {checked.world_size}")
    _seed_everything(config.seed)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(metadata.tokenizer_dir)
    collator = MaskingCollator.from_tokenizer(tokenizer, mlm_probability=config.masking.mlm_probability,
                                              whole_word=config.masking.whole_word_mask)
    eval_collator = MaskingCollator.from_tokenizer(tokenizer, mlm_probability=config.masking.eval_mlm_probability,
                                                   whole_word=config.masking.whole_word_mask)
    runtime = config.runtime
    collator.last_layer_queries = runtime.masked_last_layer
    plan = BatchPlan(len(train_data), batches.global_batch_size, batches.per_device_batch_size, world, config.seed,
                     lengths=train_data.lengths() if batches.bucket_by_length else None, packed=checked.packed_rows,
                     warmup_steps=batches.batch_warmup_steps, warmup_start=batches.batch_warmup_start)
    masking = MaskingSchedule(config.masking.mlm_probability, config.masking.mlm_probability_end,
                              masking_steps(config) or 1)
    if checked.packed_rows is not None:
        accelerator.print(f"packing: {len(train_data):,} sequences in {len(checked.packed_rows):,} rows of "
                          f"{checked.packed_rows.capacity} slots ({checked.packed_rows.fill(train_data.lengths()):.1%} "
                          f"real tokens, {len(train_data) / len(checked.packed_rows):.2f} sequences a row)")
    total_steps = _total_steps(config)

    kernel = choose_kernel(runtime.attention, accelerator.device, attention_dropout(bert), training=True)
    model = pretraining_model(bert, unpad_inputs=runtime.unpad_inputs, next_sentence=config.objective == "mlm_nsp",
                              attention=kernel)
    if config.init_from and resume_from is None:
        accelerator.print(_load_initial_weights(config.init_from, model))
    embedding_seconds = 0.0
    if resume_from is None and (config.embedding_init == "cooccurrence" or config.mlm_bias_init == "unigram"):
        started = time.perf_counter()
        ids, example = token_stream(*train_data.token_buffers(), seed=config.seed)
        special_ids = set(tokenizer.all_special_ids)
        if config.embedding_init == "cooccurrence":
            _start_from_word_vectors(model, ids, example, special_ids, config.embedding_window, config.seed,
                                     accelerator)
        if config.mlm_bias_init == "unigram":
            _start_from_unigram_bias(model, ids, special_ids, accelerator)
        embedding_seconds = time.perf_counter() - started
    optimization = config.optimization
    if optimization.embedding_lr_scale == 0:  # frozen: no gradient for the vocabulary-sized matrix at all
        model.token_embeddings().weight.requires_grad_(False)
    optimizer = build_optimizer(model, optimization.optimizer, optimization.learning_rate, optimization.weight_decay,
                                (optimization.adam_beta1, optimization.adam_beta2), optimization.adam_epsilon,
                                accelerator.device, optimization.embedding_lr_scale)
    vocabulary, data = metadata.tokenizer.vocab_sha256, data_fingerprint(metadata)
    state = TrainerState(elapsed_seconds=embedding_seconds, vocab_sha256=vocabulary,  # the vectors' time counts
                         data_fingerprint=data)
    scheduler = _learning_rate_schedule(optimizer, config, state, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    if runtime.compile:  # in place: the state dict keeps its names, so checkpoints are those of the eager model
        accelerator.unwrap_model(model).compile(dynamic=True)

    if resume_from is not None:
        vars(state).update(vars(load_checkpoint(resume_from, accelerator, model, optimizer, scheduler)))
        state.vocab_sha256 = vocabulary  # checked to agree above; kept from now on if the checkpoint predates it
        state.data_fingerprint = data
        accelerator.print(f"resumed from {resume_from} at step {state.step}")
        if accelerator.is_main_process:
            truncate_metrics(output / METRICS_FILE, state.step)
    elif accelerator.is_main_process:  # lines of a start killed before its first checkpoint
        truncate_metrics(output / METRICS_FILE, 0)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / RUN_CONFIG_FILE)
    start_trackers(accelerator, config.output, config.logging.project, config.logging.run_name, config_to_dict(config))
    flops_per_token = training_flops_per_token(bert, train_data.max_seq_length, config.masking.mlm_probability)
    peak = gpu_peak_flops(torch.cuda.get_device_name()) if accelerator.device.type == "cuda" else None
    return _Run(config, accelerator, model, optimizer, scheduler, collator, eval_collator, train_data, eval_data, plan,
                total_steps, state, flops_per_token, peak, masking, started_at_step=state.step)


def fit(run: _Run, stop_requests: StopRequests, show_progress: bool = True) -> tuple[str, dict[str, float], str]:
    """The training loop, from the run's current step to its budget or a request in ``stop_requests``.

    Returns why it stopped, the last logged metrics and the stop signal all ranks acted on ('' if none).
    """
    config, accelerator, model, state = run.config, run.accelerator, run.model, run.state
    dataset = MicroBatches(run.train_data, run.plan, run.collator, accelerator.process_index, run.masking)
    batches = micro_batch_loader(dataset, run.plan.first_micro_step(state.step), run.plan.first_micro_step(run.total_steps),
                                 config.batches.num_workers)
    progress = _progress_bar(show_progress and accelerator.is_local_main_process, state.step,
                             run.total_steps if run.total_steps != _UNBOUNDED else None)
    last_metrics: dict[str, float] = {}
    stopped_because, stop_signal = _spent_budget(state, config) or "max_steps reached", ""
    window = _ThroughputWindow()
    elapsed_before = state.elapsed_seconds
    run_started = time.perf_counter()
    model.train()
    while state.step < run.total_steps and not _spent_budget(state, config):  # a finished run resumed takes no step
        step_metrics = _train_step(model, run.optimizer, batches, accelerator, run.plan.micro_steps(state.step), config)
        state.elapsed_seconds = elapsed_before + time.perf_counter() - run_started
        all_tokens, all_sequences = _of_every_process(step_metrics["tokens"], step_metrics["sequences"], accelerator)
        _update_state(state, step_metrics, all_tokens, all_sequences)
        run.scheduler.step()  # after the step is counted: a token budget's decay reads tokens_seen
        window.add(all_tokens, all_sequences)
        if step_metrics["skipped"]:
            accelerator.print(f"step {state.step}: non-finite loss or gradients, step skipped "
                              f"({state.consecutive_nonfinite} in a row)")
        progress.update(1)
        if state.step % config.logging.log_every == 0 or state.step == run.total_steps:
            last_metrics = _log_metrics(run, step_metrics, window)
            progress.set_postfix(loss=f"{last_metrics['loss']:.3f}", lr=f"{last_metrics['learning_rate']:.2e}",
                                 tok_s=f"{last_metrics['tokens_per_second']:,.0f}")
        if run.eval_data is not None and config.logging.eval_every and state.step % config.logging.eval_every == 0:
            _run_evaluation(run)
            window.reset()  # tokens/s measures training, not evaluation
        reason, stop_signal = _stop_reason(state, config, stop_requests, accelerator, run.total_steps)
        if state.consecutive_nonfinite >= config.runtime.max_nonfinite_steps:
            accelerator.end_training()
            last = list_checkpoints(config.output)
            raise BertpreError(f"stopped after {state.consecutive_nonfinite} non-finite steps in a row at step "
                               f"{state.step}; the last good checkpoint is {last[-1] if last else 'none'} "
                               "(lower the learning rate, use bf16 instead of fp16, or check the data)")
        if reason:
            stopped_because = reason
            break
        every = config.checkpointing.checkpoint_every
        if every and state.step % every == 0 and state.step < run.total_steps:
            save_checkpoint(accelerator, model, run.optimizer, run.scheduler, state, config)
            window.reset()
    progress.close()
    return stopped_because, last_metrics, stop_signal


def finish(run: _Run, stopped_because: str, last_metrics: dict[str, float], stop_signal: str,
           started: float) -> PretrainSummary:
    """Evaluate once more unless just done (or stopped by a signal), save the final checkpoint, requeue
    the SLURM job if the signal asks for it, and sum up."""
    config, state = run.config, run.state
    if run.eval_data is not None and state.last_eval.get("step") != state.step and not stop_signal:
        _run_evaluation(run)
    checkpoints = list_checkpoints(config.output)
    if state.step == run.started_at_step and checkpoints and checkpoints[-1].name == checkpoint_name(state.step):
        checkpoint = checkpoints[-1]  # nothing trained since the checkpoint we resumed from
    else:
        checkpoint = save_checkpoint(run.accelerator, run.model, run.optimizer, run.scheduler, state, config)
    # SLURM's SIGTERM follows the requeue at once: the trackers' logs are complete before it
    finish_trackers(run.accelerator)
    requeued = requeue_after_stop(run.accelerator, stop_signal)  # every rank's checkpoint part is written
    return PretrainSummary(str(config.output), state.step, state.tokens_seen, state.skipped_steps, stopped_because,
                           last_metrics, {k: v for k, v in state.last_eval.items() if k != "step"},
                           str(checkpoint), time.perf_counter() - started, stop_signal, requeued,
                           config.runtime.mixed_precision, run.accelerator.is_main_process)


_UNBOUNDED = 2**62  # a run with a time or token budget and no step limit: the loop ends when the budget is spent


def _total_steps(config: PretrainConfig) -> int:
    return config.schedule.max_steps or _UNBOUNDED


def _learning_rate_schedule(optimizer: torch.optim.Optimizer, config: PretrainConfig, state: TrainerState,
                            total_steps: int) -> Any:
    """Warm-up then decay over the run's length: its steps (``max_steps`` or ``schedule_steps``), else its
    token budget (tokens seen over all processes), else its time budget (elapsed seconds)."""
    schedule = config.schedule
    decay = Decay(**schedule.decay())
    if schedule.schedule_steps or total_steps != _UNBOUNDED:
        return build_scheduler(optimizer, schedule.warmup_steps, schedule.schedule_steps or total_steps,
                               schedule.lr_schedule, decay)
    if schedule.max_tokens:
        return BudgetSchedule(optimizer, schedule.warmup_steps, schedule.max_tokens, schedule.lr_schedule,
                              spent=lambda: state.tokens_seen, decay=decay)
    return BudgetSchedule(optimizer, schedule.warmup_steps, schedule.max_minutes * 60, schedule.lr_schedule,
                          spent=lambda: state.elapsed_seconds, decay=decay)


def _start_from_word_vectors(model: nn.Module, ids: np.ndarray, example: np.ndarray, special_ids: set[int],
                             window: int, seed: int, accelerator: Any) -> None:
    """Token embeddings (and so the tied MLM decoder) from the training tokens' co-occurrences."""
    started = time.perf_counter()
    embeddings = model.token_embeddings().weight
    vectors = cooccurrence_vectors(ids, example, embeddings.shape[0], embeddings.shape[1], special_ids,
                                   window=window, scale=model.config.initializer_range, seed=seed)
    with torch.no_grad():
        embeddings.copy_(vectors.vectors)
    accelerator.print(f"{vectors.describe()}, {time.perf_counter() - started:.0f} s")


def _start_from_unigram_bias(model: nn.Module, ids: np.ndarray, special_ids: set[int],
                             accelerator: Any) -> None:
    """The masked-LM output bias from the training tokens' log-frequencies."""
    bias = model.output_bias()
    if bias is None:
        raise BertpreError("mlm_bias_init: unigram needs a decoder bias, and the model has none (decoder_bias: false)")
    log_probs = unigram_log_probabilities(ids, bias.shape[0], special_ids)
    with torch.no_grad():
        bias.copy_(log_probs)
    entropy = float(-(log_probs.exp() * log_probs).sum())
    accelerator.print(f"masked-LM bias from the unigram frequencies of {len(ids):,} tokens "
                      f"(entropy {entropy:.2f} nats: the loss to beat)")


def _load_initial_weights(source: str, model: nn.Module) -> str:
    """Weights from a bertpre checkpoint or a Hugging Face directory into ``model``; what was loaded, in a line."""
    path = Path(source)
    if is_complete(path):
        tensors = read_checkpoint_weights(path)
        kind = "a bertpre checkpoint: a new phase"
    else:
        tensors, _ = from_hf_state_dict(model.config, read_safetensors(path))
        kind = "a Hugging Face model: continued pretraining"
    report = load_encoder_weights(model, tensors, path)
    return (f"initialised from {path} ({kind}; {report.describe()}); optimizer, learning-rate schedule and step "
            "count start anew")


def _train_step(model: nn.Module, optimizer: Any, batches: Iterator[dict], accelerator: Any,
                accumulation: int, config: PretrainConfig) -> dict[str, float]:
    """Forward and backward over the micro-batches of one step; gradients sync on the last only."""
    sums = {"mlm_loss": 0.0, "nsp_loss": 0.0, "mlm_correct": 0, "masked": 0, "tokens": 0, "sequences": 0,
            "slots": 0}
    finite = True
    with_nsp = config.objective == "mlm_nsp"
    for micro_step in range(accumulation):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
        sync = micro_step == accumulation - 1
        context = contextlib.nullcontext() if sync else accelerator.no_sync(model)
        with context:
            with accelerator.autocast():
                output = model(**model_inputs(batch, with_nsp))
            loss = output.loss
            finite &= bool(torch.isfinite(loss.detach()))
            accelerator.backward(loss / accumulation)
        sums["mlm_loss"] += output.mlm_loss.detach().item() / accumulation
        if with_nsp:
            sums["nsp_loss"] += output.nsp_loss.detach().item() / accumulation
        sums["mlm_correct"] += int((output.mlm_logits.detach().argmax(-1) == batch["masked_labels"]).sum())
        sums["masked"] += batch["masked_labels"].numel()
        sums["tokens"] += int(batch["attention_mask"].sum())
        sums["slots"] += batch["attention_mask"].numel()
        sums["sequences"] += batch["next_sentence_label"].numel()  # one label a sequence, packed or not
    if config.optimization.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.optimization.max_grad_norm)
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
    sums.update(grad_norm=grad_norm, skipped=skipped, nonfinite=nonfinite, micro_steps=accumulation)
    return sums


def model_inputs(batch: dict[str, torch.Tensor], with_nsp: bool) -> dict[str, torch.Tensor]:
    """What the model takes of a training batch: the compact masked-LM form (not the dense labels), the packed
    layout when the rows are packed, and the NSP labels when the objective has them."""
    return {key: value for key, value in batch.items()
            if key != "labels" and (with_nsp or key != "next_sentence_label")}


def _of_every_process(tokens: int, sequences: int, accelerator: Any) -> tuple[int, int]:
    """This step's real (non-padding) tokens and its sequences over all processes: each read other lengths
    (and, packed, other numbers of sequences)."""
    if accelerator.num_processes == 1:
        return tokens, sequences
    total = accelerator.reduce(torch.tensor([tokens, sequences], device=accelerator.device), reduction="sum")
    return int(total[0].item()), int(total[1].item())


def _update_state(state: TrainerState, metrics: dict[str, float], all_tokens: int, all_sequences: int) -> None:
    state.step += 1
    state.tokens_seen += all_tokens
    state.sequences_seen += all_sequences
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


def _log_metrics(run: _Run, step: dict[str, float], window: _ThroughputWindow) -> dict[str, float]:
    accelerator, state, world = run.accelerator, run.state, run.accelerator.num_processes
    tokens_per_second, sequences_per_second = window.rates()
    window.reset()
    masked_fraction = step["masked"] / max(step["tokens"], 1)  # this rank's: its own tokens, before any reduction
    if world > 1:  # losses are per-process means of equal-sized batches: average them; counts add up
        local = torch.tensor([step["mlm_loss"], step["nsp_loss"], step["mlm_correct"], step["masked"]],
                             dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, "sum")
        step = {**step, "mlm_loss": total[0].item() / world, "nsp_loss": total[1].item() / world,
                "mlm_correct": total[2].item(), "masked": total[3].item()}
    metrics = {
        "step": state.step, "tokens_seen": state.tokens_seen,
        "loss": step["mlm_loss"] + step["nsp_loss"], "mlm_loss": step["mlm_loss"], "nsp_loss": step["nsp_loss"],
        "mlm_accuracy": step["mlm_correct"] / max(step["masked"], 1),
        "learning_rate": run.scheduler.get_last_lr()[0],
        "grad_norm": step["grad_norm"], "tokens_per_second": tokens_per_second,
        "sequences_per_second": sequences_per_second,
        # this rank's share of padding in the step: what --unpad-inputs or --bucket-by-length would save
        "padding_fraction": 1 - step["tokens"] / max(step["slots"], 1), "skipped_steps": state.skipped_steps,
        "masked_fraction": masked_fraction, "micro_steps": step["micro_steps"],
        "elapsed_seconds": state.elapsed_seconds,
    }
    if run.peak_flops:
        metrics["mfu"] = tokens_per_second * run.flops_per_token / (run.peak_flops * world)
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    accelerator.log({f"train/{k}": v for k, v in metrics.items() if k != "step"}, step=state.step)
    if accelerator.is_main_process:
        append_metrics(run.config.output, metrics)
    return metrics


def _run_evaluation(run: _Run) -> None:
    config, accelerator, state = run.config, run.accelerator, run.state
    results = evaluate(run.model, run.eval_data, run.eval_collator, accelerator, config.batches.per_device_batch_size,
                       config.logging.eval_batches, config.seed)
    state.last_eval = {**results, "step": state.step}
    accelerator.log({f"eval/{k[5:]}": v for k, v in results.items()}, step=state.step)
    reached = _new_milestones(state, results["eval_mlm_accuracy"])
    if accelerator.is_main_process:
        append_metrics(config.output, {"step": state.step, "tokens_seen": state.tokens_seen,
                                       "elapsed_seconds": state.elapsed_seconds, **results})
        for threshold in reached:
            append_metrics(config.output, {"step": state.step, "mlm_accuracy_milestone": threshold,
                                           "tokens_seen": state.tokens_seen, "elapsed_seconds": state.elapsed_seconds})


ACCURACY_MILESTONES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
"""Held-out MLM accuracies whose first crossing (time to accuracy) a run records."""


def _new_milestones(state: TrainerState, accuracy: float) -> list[float]:
    """Record the thresholds this evaluation crossed first; return them."""
    reached = [t for t in ACCURACY_MILESTONES if accuracy >= t and f"{t:.1f}" not in state.milestones]
    for threshold in reached:
        state.milestones[f"{threshold:.1f}"] = {"step": state.step, "tokens_seen": state.tokens_seen,
                                                 "elapsed_seconds": state.elapsed_seconds}
    return reached


def _stop_reason(state: TrainerState, config: PretrainConfig, stop_requests: StopRequests,
                 accelerator: Any, total_steps: int) -> tuple[str, str]:
    """Why to stop now ('' to go on) and the stop signal acted on ('' if none); every rank gets the same answer.

    SIGUSR1 (checkpoint and requeue) on the step that reaches the budget is not acted on: the run is done,
    and finishes as any finished run does, rather than requeue a job with nothing left to do.
    """
    schedule = config.schedule
    flags = torch.tensor([
        *stop_requests.flags(),
        float(schedule.max_minutes is not None and state.elapsed_seconds >= schedule.max_minutes * 60),
        float(schedule.max_tokens is not None and state.tokens_seen >= schedule.max_tokens),
    ], device=accelerator.device)
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, "max")
    stop_signal = stop_signal_from_flags(flags[:2])
    budget = ("max_minutes reached" if flags[2] else "max_tokens reached" if flags[3]
              else "max_steps reached" if state.step >= total_steps else "")
    if stop_signal and not (stop_signal == REQUEUE_SIGNAL and budget):
        return f"stop signal ({stop_signal}): checkpoint saved", stop_signal
    return budget, ""


def _spent_budget(state: TrainerState, config: PretrainConfig) -> str:
    """Which time or token budget the counters have reached ('' if none). Inside the loop every rank stops by
    :func:`_stop_reason`'s agreement; this reads the counters alone, as a run resumed from its end finds them."""
    schedule = config.schedule
    if schedule.max_minutes is not None and state.elapsed_seconds >= schedule.max_minutes * 60:
        return "max_minutes reached"
    if schedule.max_tokens is not None and state.tokens_seen >= schedule.max_tokens:
        return "max_tokens reached"
    return ""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _progress_bar(enabled: bool, initial: int, total: Optional[int]) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="pretrain", unit="step", dynamic_ncols=True)
