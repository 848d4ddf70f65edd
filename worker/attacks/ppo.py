"""Proximal Policy Optimization (Schulman et al. 2017), written once for the RL-driven attacks
(AstFocus's two agents, RLSB's frame-deletion policy).

Only the two pieces the attacks share live here: the clipped surrogate objective and generalised
advantage estimation. Each attack owns its networks, its rollout and its reward.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def clipped_surrogate(
    new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float = 0.2
) -> torch.Tensor:
    """−E[min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)], ρ = π_new(a|s) / π_old(a|s): a loss to MINIMISE."""
    ratio = torch.exp(new_log_prob - old_log_prob)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantage
    return -torch.minimum(unclipped, clipped).mean()


def generalized_advantages(
    rewards: Sequence[float], values: Sequence[float], gamma: float = 0.99, lam: float = 0.95,
    last_value: float = 0.0,
) -> tuple[list[float], list[float]]:
    """GAE(γ, λ) advantages and the returns (advantage + value) of one finished trajectory."""
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else last_value
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    returns = [a + v for a, v in zip(advantages, values, strict=True)]
    return advantages, returns


def ppo_update(
    loss_of_batch: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, epochs: int = 4,
    max_grad_norm: float = 0.5,
) -> float:
    """`epochs` gradient steps on the same on-policy batch (the loss closure recomputes π_new)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_value = 0.0
    for _ in range(epochs):
        loss = loss_of_batch()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        loss_value = float(loss.detach())
    return loss_value

