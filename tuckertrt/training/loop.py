"""The one training loop, shared by labelled fine-tuning, distillation and fine-tuning a pruned model.

It draws batches with its own seeded generator, steps AdamW, and at every checkpoint validates, keeps the best
model (``save_best``) and writes its full state (weights, optimizer, generator states, iteration, history)
atomically, so that ``resume=True`` continues an interrupted run exactly where it left off.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tuckertrt.errors import TuckerTRTError
from tuckertrt.training.sampling import Batch
from tuckertrt.training.state import load_state, save_state

SCHEDULES = ("constant", "poly")
Validator = Callable[[torch.nn.Module], dict[str, Any]]  # must return a "score" (higher is better)


@dataclass
class TrainConfig:
    """Paper recipe by default: AdamW, lr 1e-5, weight decay 3e-5, constant lr, batch 2. ``schedule="poly"``
    decays the lr as nnU-Net does, ``lr·(1 − i/iterations)^0.9``, over the run's total iterations. ``amp`` runs
    the forward passes in bfloat16 autocast (the paper fine-tuned in mixed precision); losses stay float32."""

    iterations: int = 250
    batch_size: int = 2
    lr: float = 1e-5
    weight_decay: float = 3e-5
    checkpoint_every: int = 50
    patience: int | None = None  # checkpoints without improvement before stopping early
    seed: int = 0
    device: str = "cpu"
    schedule: str = "constant"
    amp: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise TuckerTRTError(f"iterations must be at least 1, got {self.iterations}")
        if self.batch_size < 1:
            raise TuckerTRTError(f"batch size must be at least 1, got {self.batch_size}")
        if self.checkpoint_every < 1:
            raise TuckerTRTError(f"checkpoint interval must be at least 1, got {self.checkpoint_every}")
        if not self.lr > 0:
            raise TuckerTRTError(f"learning rate must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise TuckerTRTError(f"unknown lr schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")

    def lr_at(self, iteration: int) -> float:
        """The learning rate of step ``iteration`` (0-based)."""
        if self.schedule == "poly":
            return self.lr * (1 - iteration / self.iterations) ** 0.9
        return self.lr


@dataclass
class TrainResult:
    iterations: int
    stopped_early: bool
    best: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None


@dataclass
class Hooks:
    """What the loop calls back: ``validate`` at checkpoints, ``save_best`` when the score improves (or at
    every checkpoint without validation), ``after_step`` after each optimizer step (e.g. re-apply masks),
    ``prepare`` on each batch before the forward pass (e.g. add online teacher targets)."""

    save_best: Callable[[torch.nn.Module, dict[str, Any]], None]
    validate: Validator | None = None
    after_step: Callable[[torch.nn.Module], None] | None = None
    prepare: Callable[[Batch], Batch] | None = None


def train(network: torch.nn.Module, sample: Callable[[np.random.Generator], Batch],
          objective: Callable[[torch.Tensor, Batch], tuple[torch.Tensor, dict[str, float]]],
          config: TrainConfig, state_path: Path, hooks: Hooks, fingerprint: dict[str, Any],
          resume: bool = False, progress: bool = True,
          interrupt_after: int | None = None) -> TrainResult:
    """Train ``network`` in place. ``fingerprint`` identifies the run; resuming a different run is refused.
    ``interrupt_after`` raises KeyboardInterrupt after that iteration (for testing resumption)."""
    device = torch.device(config.device)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    start_iteration, history, best, bad_checks = 0, [], None, 0
    resumed_from = None
    if resume and state_path.exists():
        state = load_state(state_path, fingerprint)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        start_iteration, history, best, bad_checks = (state["iteration"], state["history"], state["best"],
                                                      state["bad_checks"])
        resumed_from = start_iteration
    started = time.perf_counter()
    if not history:  # the zero-shot checkpoint
        best, bad_checks = _checkpoint(network, 0, {}, hooks, history, best, bad_checks)
    stopped_early = config.patience is not None and bad_checks >= config.patience
    bar = _progress_bar(config.iterations, start_iteration, progress)
    running: dict[str, float] = {}
    iteration = start_iteration
    try:
        while iteration < config.iterations and not stopped_early:
            network.train()
            batch = sample(rng)
            if hooks.prepare:
                batch = hooks.prepare(batch)
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(iteration)
            with autocast(device, config.amp):
                logits = network(batch.image)
            loss, stats = objective(logits.float(), batch)
            if not torch.isfinite(loss):
                raise TuckerTRTError(f"loss became {float(loss)} at iteration {iteration + 1}; lower the lr")
            loss.backward()
            optimizer.step()
            if hooks.after_step:
                hooks.after_step(network)
            iteration += 1
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in stats.items()}
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
            if iteration % config.checkpoint_every == 0 or iteration == config.iterations:
                best, bad_checks = _checkpoint(network, iteration, running, hooks, history, best, bad_checks)
                stopped_early = config.patience is not None and bad_checks >= config.patience
                save_state(state_path, fingerprint, network, optimizer, rng, iteration, history, best, bad_checks)
            if interrupt_after is not None and iteration >= interrupt_after:
                raise KeyboardInterrupt
    finally:
        if bar is not None:
            bar.close()
        network.eval()
    return TrainResult(iteration, stopped_early, best, history, time.perf_counter() - started, resumed_from)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled`` (no loss scaling needed, unlike float16)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _checkpoint(network: torch.nn.Module, iteration: int, running: dict[str, float], hooks: Hooks,
                history: list[dict[str, Any]], best: dict[str, Any] | None, bad_checks: int
                ) -> tuple[dict[str, Any] | None, int]:
    """Validate, record, keep the best; return the new (best, checks without improvement)."""
    network.eval()
    entry: dict[str, Any] = {"iteration": iteration, "train": dict(running)}
    if hooks.validate:
        with torch.no_grad():
            entry["validation"] = hooks.validate(network)
    history.append(entry)
    score = entry.get("validation", {}).get("score")
    if best is None or score is None or score > best["score"]:
        hooks.save_best(network, entry)
        return {"iteration": iteration, "score": score}, 0
    return best, bad_checks + 1


def _progress_bar(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="it", dynamic_ncols=True)


def config_fingerprint(config: TrainConfig, **identity: Any) -> dict[str, Any]:
    """What must not change between a run and its resumption (the iteration count may grow, unless the lr
    schedule depends on it)."""
    variable = ("iterations", "device", "patience") if config.schedule == "constant" else ("device", "patience")
    fixed = {k: v for k, v in asdict(config).items() if k not in variable}
    return json.loads(json.dumps({**fixed, **identity}, default=str))  # plain lists/dicts, as saved
