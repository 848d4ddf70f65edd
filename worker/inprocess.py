"""Run an attack against a zoo model loaded in this process: the fast path of benchmarks.

`InProcessOracle` answers exactly what the TorchServe handler answers (softmax top-1 of the same fp16
weights) and keeps the oracle client's budget rules (partial batches, BudgetExhausted, one query held
back for the final verification), but writes no audit log. Jobs through the service always use
worker/oracle_client.py; this exists so a benchmark over hundreds of attacks fits on two CPU cores.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model_server.protocol import Prediction
from worker.attacks import Attack, build_attack
from worker.attacks.base import AttackContext, Best, Goal, Tracker, job_succeeded
from worker.metrics import perturbation_metrics
from worker.oracle_client import BudgetExhausted


class InProcessOracle:
    def __init__(self, model_name: str, max_queries: int, chunk: int = 48, held_back: int = 1) -> None:
        import torch

        from core.memory import keep_freed_memory
        from model_server import zoo

        keep_freed_memory()

        self.model = zoo.load_trained(model_name)
        self.labels = zoo.load_card(model_name)["labels"]
        self.max_queries, self.used = max_queries, 0
        self.held_back, self.chunk = held_back, chunk
        self._torch, self._zoo = torch, zoo

    @property
    def remaining(self) -> int:
        return max(0, self.max_queries - self.held_back - self.used)

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        if clips.ndim == 4:
            clips = clips[None]
        allowed = self.remaining
        if allowed == 0 or (len(clips) > allowed and not partial):
            raise BudgetExhausted(f"{len(clips)} queries asked, {allowed} left")
        clips = clips[:allowed]
        self.used += len(clips)
        return self.predict(clips)

    def verify(self, clip: np.ndarray) -> Prediction:
        self.used += 1
        return self.predict(clip[None])[0]

    def predict(self, clips: np.ndarray) -> list[Prediction]:
        torch = self._torch
        answers: list[Prediction] = []
        with torch.inference_mode():
            for start in range(0, len(clips), self.chunk):
                logits = self.model(self._zoo.to_model_input(clips[start : start + self.chunk]))
                probability, label = torch.softmax(logits.float(), dim=1).max(dim=1)
                answers += [
                    Prediction(label=k, label_name=self.labels[k], probability=p)
                    for p, k in zip(probability.tolist(), label.tolist(), strict=True)
                ]
        return answers


@dataclass
class LocalResult:
    success: bool  # as a job's: label met and the attack's own criterion (base.job_succeeded)
    label_met: bool
    queries: int
    seconds: float
    clip: np.ndarray
    metrics: dict = field(default_factory=dict)
    trace: dict = field(default_factory=dict)
    history: list[tuple[int, float]] = field(default_factory=list)


def run_local(
    attack: str,
    params: dict,
    model: str,
    clean: np.ndarray,
    max_queries: int,
    target_label: int | None = None,
    oracle: InProcessOracle | None = None,
    prepare: Callable[[Attack], None] | None = None,
) -> LocalResult:
    """One attack on one clip, in process, with the runner's rules: clean query first, verify last.

    `prepare(attack)` runs on the built attack before it starts (e.g. to hand RLSB its policy).
    """
    from model_server import dataset, zoo

    oracle = oracle or InProcessOracle(model, max_queries)
    oracle.max_queries, oracle.used = max_queries, 0
    first = oracle.query(clean[None])[0]
    goal = Goal(source_label=first["label"], target_label=target_label)
    history: list[tuple[int, float]] = []
    tracker = Tracker(best=Best(clip=clean, score=goal.score(first), success=False))
    tracker.on_improve = lambda best: history.append((oracle.used, best.score))
    built = build_attack(attack, params)
    if prepare is not None:
        prepare(built)
    motion = model in zoo.MODELS and zoo.entry(model).dataset == "motion"
    ctx = AttackContext(
        clean=clean, oracle=oracle, goal=goal, tracker=tracker,
        rng=np.random.default_rng([built.params.seed, 0]),
        reference_clips=(lambda label, n: dataset.reference_clips(label, n)) if motion else None,
        victim=model,
    )
    started = time.monotonic()
    try:
        built.run(ctx)
    except BudgetExhausted:
        pass
    label_met = goal.is_met(oracle.verify(tracker.best.clip)["label"])
    seconds = time.monotonic() - started
    return LocalResult(
        success=job_succeeded(label_met, tracker.best), label_met=label_met, queries=oracle.used,
        seconds=seconds, clip=tracker.best.clip,
        metrics=perturbation_metrics(tracker.best.clip, clean), trace=ctx.trace, history=history,
    )
