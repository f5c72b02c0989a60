"""Optimisation: BERT's weight-decay groups, AdamW or LAMB, and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from bertpre.training.sharding import local_part


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019), the large-batch optimizer of NVIDIA's BERT recipe.

    Adam moments with bias correction, decoupled weight decay inside the update, then a per-tensor
    trust ratio ``‖w‖ / ‖update‖`` (1 where either norm is zero) scales the learning rate.

    Under FSDP2 each process holds a shard of every parameter (a ``DTensor``): the element-wise
    steps run on the shard, and the norms of the whole tensors come from one all-reduce of every
    shard's squared norms per step, so the trust ratios are those of the unsharded run.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102 - torch.optim.Optimizer.step
        loss = closure() if closure is not None else None
        sharded: dict[tuple[Any, ...], list[tuple[Tensor, Tensor, float, Tensor]]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                weight, update = local_part(p), self._update(p, group)
                norms = torch.stack([weight.norm(), update.norm()])
                shard_groups = _shard_groups(p)
                if shard_groups:  # the whole tensor's norms are known once every shard's are summed
                    sharded.setdefault(shard_groups, []).append((weight, update, group["lr"], norms))
                else:
                    _apply_trust_ratio(weight, update, norms, group["lr"])
        for shard_groups, pending in sharded.items():
            squares = torch.stack([norms for *_, norms in pending]).square()
            for process_group in shard_groups:
                torch.distributed.all_reduce(squares, group=process_group)
            for (weight, update, lr, _), norms in zip(pending, squares.sqrt()):
                _apply_trust_ratio(weight, update, norms, lr)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        """Advance the Adam moments of ``p`` and return its update (this process's part of it)."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        weight, grad = local_part(p), local_part(p.grad)
        exp_avg, exp_avg_sq = local_part(state["exp_avg"]), local_part(state["exp_avg_sq"])
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = (exp_avg / (1 - beta1 ** step)) / ((exp_avg_sq / (1 - beta2 ** step)).sqrt() + group["eps"])
        if group["weight_decay"]:
            update.add_(weight, alpha=group["weight_decay"])
        return update


def _apply_trust_ratio(weight: Tensor, update: Tensor, norms: Tensor, lr: float) -> None:
    """``weight -= lr · trust · update`` with ``trust = ‖w‖ / ‖update‖`` (1 where either norm is zero)."""
    weight_norm, update_norm = norms[0], norms[1]
    trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm, torch.ones_like(weight_norm))
    weight.add_(update * trust, alpha=-lr)


def _shard_groups(tensor: Tensor) -> tuple[Any, ...]:
    """The process groups across which ``tensor`` is split (none for an ordinary tensor)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        return ()
    return tuple(tensor.device_mesh.get_group(dim) for dim, placement in enumerate(tensor.placements)
                 if placement.is_shard())


FUSED_ADAMW_DEVICES = ("cuda", "cpu")
"""Where torch's fused AdamW runs: on the CPU it takes a seventh of the time of the per-tensor loop (a 20 M
parameter step, 2 cores: 0.07 s against 0.49 s, 2026-12-06)."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weight decay on matrices, none on biases and LayerNorm (BERT's rule)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, learning_rate: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                    device: torch.device | None = None, embedding_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW (fused: one kernel for all parameters, on CUDA and CPU alike) or LAMB with BERT's weight-decay groups.

    ``embedding_lr_scale`` ≠ 1 gives the token embeddings a group of their own at that multiple of
    the learning rate (schedulers scale every group alike); freeze them (requires_grad False) for 0.
    """
    groups = parameter_groups(model, weight_decay)
    if embedding_lr_scale != 1.0:
        groups = _with_own_embedding_group(model, groups, learning_rate * embedding_lr_scale, weight_decay)
    if name == "lamb":
        return Lamb(groups, lr=learning_rate, betas=betas, eps=eps)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps,
                             fused=device is not None and device.type in FUSED_ADAMW_DEVICES)


def _with_own_embedding_group(model: nn.Module, groups: list[dict[str, Any]], learning_rate: float,
                              weight_decay: float) -> list[dict[str, Any]]:
    embeddings = model.token_embeddings().weight
    if not embeddings.requires_grad:
        return groups
    rest = [{**group, "params": [p for p in group["params"] if p is not embeddings]} for group in groups]
    return rest + [{"params": [embeddings], "weight_decay": weight_decay, "lr": learning_rate}]


@dataclass(frozen=True)
class Decay:
    """What the learning rate does after warm-up: ``linear``, ``cosine`` or ``constant``, or ``wsd``
    (warm-up, stable, decay): the peak rate held, then a decay over the run's last ``fraction`` (or its last
    ``steps``), shaped ``linear``, ``cosine`` or ``1-sqrt`` (Hägele et al. 2024: the rate falls slowly, then
    fast, which is what makes a short decay as good as a long cosine)."""

    schedule: str = "linear"
    fraction: float = 0.1
    shape: str = "1-sqrt"
    steps: Optional[int] = None

    def factor(self, done: float, length: float) -> float:
        """The multiplier of the peak rate once ``done`` of the ``length`` after warm-up is past."""
        if self.schedule == "constant":
            return 1.0
        if self.schedule != "wsd":
            return _shaped(min(1.0, done / max(length, 1e-9)), self.schedule)
        decay = min(length, self.steps if self.steps is not None else self.fraction * length)
        stable = length - decay
        if done < stable:
            return 1.0
        return _shaped(min(1.0, (done - stable) / max(decay, 1e-9)), self.shape)


def _shaped(progress: float, shape: str) -> float:
    """A decay from 1 to 0 as ``progress`` goes from 0 to 1."""
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    return max(0.0, 1.0 - progress)


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, schedule: str,
                         decay: Optional[Decay] = None) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then the chosen decay (``decay`` gives
    the wsd shape; by default the plain ``schedule``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return (decay or Decay(schedule)).factor(step - warmup_steps, max(1, total_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    schedule: str = "linear", decay: Optional[Decay] = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler: linear warm-up over ``warmup_steps``, then ``schedule`` to ``total_steps``.

    The steps are all a checkpoint keeps (``last_epoch``): a run resumed with a longer ``total_steps`` (or
    another wsd decay length) continues on the schedule of its new length."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup_steps, total_steps, schedule, decay))


class BudgetSchedule:
    """Linear warm-up over steps, then decay by the share of a budget spent since warm-up.

    The budget is wall time (``max_minutes`` alone) or tokens (``max_tokens`` without ``max_steps``):
    however fast the hardware, and however many tokens each step holds (padding, packing, batch
    composition), the learning rate reaches the end of its decay when the budget is spent.
    ``spent`` returns how much of it the run has used so far, resumed runs included (elapsed seconds,
    or tokens seen over all processes); it is read once per step, after the step, and the value read is
    kept in the state, so a resumed run sets exactly the learning rate the interrupted one had.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, budget: float,
                 schedule: str, spent: Callable[[], float], decay: Optional[Decay] = None) -> None:
        self.optimizer, self.warmup_steps, self.budget = optimizer, warmup_steps, budget
        self.decay, self.spent = decay or Decay(schedule), spent
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch, self.warmup_ended_at, self.spent_so_far = 0, 0.0, float(spent())
        self._apply(self._factor())  # warm-up 0 starts the decay at what was spent before the first step

    def _factor(self) -> float:
        if self.last_epoch < self.warmup_steps:
            return (self.last_epoch + 1) / self.warmup_steps
        return self.decay.factor(self.spent_so_far - self.warmup_ended_at, self.budget - self.warmup_ended_at)

    def _apply(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self) -> None:
        """Advance one optimizer step (call it after the step is counted) and set the learning rate for the next."""
        self.last_epoch += 1
        self.spent_so_far = float(self.spent())
        if self.last_epoch == self.warmup_steps:
            self.warmup_ended_at = self.spent_so_far
        self._apply(self._factor())

    def get_last_lr(self) -> list[float]:
        """The learning rates in force, as torch schedulers report them."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the schedule."""
        return {"last_epoch": self.last_epoch, "warmup_ended_at": self.warmup_ended_at, "base_lrs": self.base_lrs,
                "spent": self.spent_so_far}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a schedule saved by :meth:`state_dict` (before ``spent`` was kept: read it now)."""
        self.last_epoch, self.warmup_ended_at, self.base_lrs = state["last_epoch"], state["warmup_ended_at"], state["base_lrs"]
        self.spent_so_far = float(state["spent"]) if "spent" in state else float(self.spent())
        self._apply(self._factor())
