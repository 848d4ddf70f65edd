"""Runs one attack job from its database row to its terminal status and artifacts.

The Celery task (worker/tasks.py) is a thin shell around `run_job`, so the logic can be read here
without Celery in the way. A redelivered job (worker killed, time limit) resumes from its last
checkpoint against the same budget: `queries_used` lives in the database, not in this process.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select, update

from core.settings import Settings, get_settings
from core.video import encode_ffv1, write_npy
from db.models import Artifact, Job, JobKind, JobStatus
from db.session import new_session, session_scope
from model_server.client import OracleHTTP, OracleUnavailable
from worker.attacks import build_attack
from worker.attacks.base import AttackContext, Best, Goal, Tracker, job_succeeded
from worker.leases import (
    DATABASE_DOWN,
    DatabaseDown,
    Heartbeat,
    LeaseLost,
    lease_is_live,
    new_owner,
    release,
    ride_out,
)
from worker.metrics import perturbation_metrics
from worker.oracle_client import BudgetExhausted, JobCancelled, OracleClient, OracleFailed

log = logging.getLogger(__name__)


class StopReason:
    finished = "finished"
    budget = "budget"
    cancelled = "cancelled"
    time_limit = "time_limit"


def run_job(
    job_id: str,
    settings: Settings | None = None,
    time_limit_exc: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> str:
    """Run (or resume) a job; returns its terminal status, or why it was left alone.

    `time_limit_exc` is what the host raises at its soft time limit (Celery's SoftTimeLimitExceeded):
    the job then ends with the best clip found so far instead of losing it. DatabaseDown escapes (the
    task is retried later); a job whose lease another runner holds is left to it ("leased").
    """
    settings = settings or get_settings()
    owner = new_owner()
    claim = ride_out(
        lambda: _claim(job_id, owner, settings.job_lease_s), settings.db_retry_s, "claiming the job"
    )
    if not isinstance(claim, Job):
        return claim
    job = claim
    try:
        with Heartbeat(job_id, owner, settings.job_lease_s):
            if job.kind == JobKind.pretrain.value:
                from worker.pretraining import run_pretraining

                return run_pretraining(job, settings, time_limit_exc, owner)
            return _run_attack(job, owner, settings, time_limit_exc)
    except LeaseLost:
        log.warning("job %s: another runner took it over; this one stops", job_id)
        return "lease_lost"
    finally:
        release(job_id, owner)


def _run_attack(job: Job, owner: str, settings: Settings,
                time_limit_exc: type[BaseException] | tuple[type[BaseException], ...]) -> str:
    job_id = job.id
    clean = np.load(_artifact_path(job_id, "input"), allow_pickle=False)
    http = OracleHTTP.from_settings(settings)
    kernels = _oracle_kernels(http, job.model)
    oracle = OracleClient(job_id, job.model, http, new_session, max_batch=settings.oracle_max_batch,
                          owner=owner, db_patience_s=settings.db_retry_s, outage_s=settings.oracle_outage_s)
    goal = Goal(source_label=job.source_label, target_label=job.target_label)
    checkpoints = Checkpointer(job_id, settings)
    tracker = _initial_tracker(job, clean, goal, checkpoints)
    started = time.monotonic()
    reason, error, oracle_down = StopReason.finished, None, False
    ctx: AttackContext | None = None
    try:
        attack = build_attack(job.attack, job.params)
        ctx = AttackContext(
            clean=clean,
            oracle=oracle,
            goal=goal,
            tracker=tracker,
            rng=np.random.default_rng([attack.params.seed, job.attempts - 1]),
            reference_clips=_reference_clips(job.model),
            resume_from=tracker.best.clip if checkpoints.resumed else None,
            victim=job.model,
        )
        _attach_policy(attack, job, ctx)
        attack.run(ctx)
    except BudgetExhausted:
        reason = StopReason.budget
    except JobCancelled:
        reason = StopReason.cancelled
    except OracleFailed as exc:
        error, oracle_down = str(exc), True
    except (LeaseLost, DatabaseDown):
        checkpoints.save(tracker.best)  # whoever resumes starts from the best clip found here
        http.close()
        raise
    except time_limit_exc:  # Celery's soft time limit: keep what was found
        reason, error = StopReason.time_limit, "the job reached the worker's soft time limit"
    except Exception as exc:
        log.exception("attack %s crashed on job %s", job.attack, job_id)
        error = f"{type(exc).__name__}: {exc}"
    try:
        verify = reason != StopReason.cancelled and not oracle_down
        trace = ctx.trace if ctx is not None else {}
        return _finish(job, clean, tracker, oracle if verify else None, reason, error, started, settings,
                       checkpoints, trace, owner, kernels)
    except (LeaseLost, DatabaseDown):
        checkpoints.save(tracker.best)
        raise
    finally:
        http.close()


def _oracle_kernels(http: OracleHTTP, model: str) -> str | None:
    """The float kernels behind this job's answers (model_server.zoo.kernels), for its metrics; best effort:
    the attack does not need them, and an unreachable oracle fails the job on its first query anyway."""
    try:
        spec = http.describe(model)
    except OracleUnavailable:
        return None
    return spec.extra.get("kernels") if spec is not None else None


def _attach_policy(attack: object, job: Job, ctx: AttackContext) -> None:
    """RLSB: load the stored policy the job names; its pre-training queries are reported apart."""
    policy_id = job.params.get("policy") if job.attack == "rlsb" else None
    if not policy_id:
        return
    from worker.attacks.rlsb import load_policy

    with session_scope() as session:
        source = session.get(Job, policy_id)
        path = session.scalar(
            select(Artifact.path).where(Artifact.job_id == policy_id, Artifact.kind == "policy")
        )
        if source is None or path is None:
            raise ValueError(
                f"policy {policy_id} has no stored policy file; pre-train again (POST /policies)"
            )
        ctx.trace["policy_pretraining"] = {"policy": policy_id, "queries": source.queries_used,
                                    "seconds": (source.metrics or {}).get("seconds")}
    attack.policy = load_policy(Path(path).read_bytes())


def _claim(job_id: str, owner: str, lease_s: float) -> Job | str:
    """Take the job's lease and mark it running; or say why not (a string: skipped, leased, cancelled)."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or JobStatus(job.status).terminal:
            return "skipped"
        now = datetime.now(UTC)
        if job.cancel_requested:
            job.status, job.finished_at = JobStatus.cancelled.value, now
            return "cancelled"
        if lease_is_live(job, owner, now):
            # Delivered again while its runner is alive (e.g. after the broker's visibility timeout):
            # leave it; if that runner dies, the sweeper publishes the job again once the lease expires.
            log.warning("job %s is running under a live lease (%s); this delivery leaves it alone",
                     job_id, job.lease_owner)
            return "leased"
        job.status = JobStatus.running.value
        job.started_at = job.started_at or now
        job.attempts += 1
        job.lease_owner, job.lease_expires_at = owner, now + timedelta(seconds=lease_s)
        session.flush()
        session.expunge(job)
        return job


def _initial_tracker(job: Job, clean: np.ndarray, goal: Goal, checkpoints: Checkpointer) -> Tracker:
    clean_score = goal.score(
        {"label": job.source_label, "label_name": job.source_label_name,
         "probability": job.source_probability}
    )
    best = checkpoints.load() or Best(clip=clean, score=clean_score, success=False)
    return Tracker(best=best, on_improve=checkpoints.on_improve)


def _reference_clips(model: str) -> Callable[[int, int], np.ndarray] | None:
    """The attacker's own clips of a class, where the attacker owns data like the model's (the zoo)."""
    from model_server import dataset, zoo

    if model not in zoo.MODELS or zoo.entry(model).dataset != "motion":
        return None
    return lambda label, n: dataset.reference_clips(label, n)


class Checkpointer:
    """Keeps the best clip found so far on disk, with its score, so a crash loses no result.

    Written at most once a second (at once for a first success), atomically (write, then rename):
    after a SIGKILL the file holds a whole clip and the score the oracle gave that very clip. The
    job's `best_score` and `best_distance` columns (progress for the API) are updated alongside, best effort.
    """

    def __init__(self, job_id: str, settings: Settings) -> None:
        self.job_id = job_id
        self.path = settings.data_dir / "checkpoints" / f"{job_id}.npz"
        self.every_s = min(settings.checkpoint_every_s, 1.0)
        self.resumed = False
        self._last_db = 0.0
        self._last_file = 0.0
        self._saved_success = False

    def load(self) -> Best | None:
        if not self.path.exists():
            return None
        with np.load(self.path, allow_pickle=False) as saved:
            distance = float(saved["distance"])
            best = Best(clip=saved["clip"], score=float(saved["score"]), success=bool(saved["success"]),
                        distance=None if np.isnan(distance) else distance)
        self.resumed = True
        return best

    def on_improve(self, best: Best) -> None:
        now = time.monotonic()
        if now - self._last_file >= self.every_s or (best.success and not self._saved_success):
            self.save(best)
            self._last_file = now
            self._saved_success = self._saved_success or best.success
        if now - self._last_db >= 1.0 or best.success:
            try:
                with session_scope() as session:
                    session.execute(update(Job).where(Job.id == self.job_id)
                                    .values(best_score=best.score, best_distance=best.distance))
            except DATABASE_DOWN:
                log.warning("job %s: best score not stored (database unreachable)", self.job_id)
            self._last_db = now

    def save(self, best: Best) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        with tmp.open("wb") as handle:
            np.savez(handle, clip=np.ascontiguousarray(best.clip, dtype=np.uint8), score=best.score,
                     success=best.success, distance=np.nan if best.distance is None else best.distance)
        tmp.replace(self.path)  # atomic: a crash never leaves half a checkpoint

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _finish(
    job: Job,
    clean: np.ndarray,
    tracker: Tracker,
    oracle: OracleClient | None,
    reason: str,
    error: str | None,
    started: float,
    settings: Settings,
    checkpoints: Checkpointer,
    trace: dict,
    owner: str,
    kernels: str | None,
) -> str:
    best = tracker.best
    verified = None
    if oracle is not None:
        try:
            # The last query of every job re-checks the artifact, so what users download is exactly
            # the clip of the last answered row of the audit log.
            verified = oracle.verify(best.clip)
        except (OracleFailed, BudgetExhausted, JobCancelled) as exc:
            error = error or f"could not verify the final clip: {exc}"
            reason = StopReason.cancelled if isinstance(exc, JobCancelled) else reason
    goal = Goal(job.source_label, job.target_label)
    label_met = verified is not None and goal.is_met(verified["label"])
    success = job_succeeded(label_met, best)
    status = _terminal_status(reason, success, error)
    paths = _write_artifacts(job.id, best.clip, settings)
    metrics = {
        "success": success,
        "label_met": label_met,
        **perturbation_metrics(best.clip, clean),
        "final_label": verified["label"] if verified else None,
        "final_label_name": verified["label_name"] if verified else None,
        "final_probability": verified["probability"] if verified else None,
        "wall_time_s": round(time.monotonic() - started, 3),
        "oracle_kernels": kernels,
        "attack": trace,
    }

    def store() -> None:
        with session_scope() as session:
            row = session.get(Job, job.id, with_for_update=True)
            if row.lease_owner != owner:
                raise LeaseLost(job.id)
            metrics["queries"] = row.queries_used
            metrics["queries_per_s"] = round(row.queries_used / max(metrics["wall_time_s"], 1e-9), 2)
            row.status, row.error, row.metrics = status, error, metrics
            row.best_score = goal.score(verified) if verified else best.score
            row.best_distance = best.distance
            row.finished_at = datetime.now(UTC)
            row.lease_owner, row.lease_expires_at = None, None
            for kind, path in paths.items():
                _upsert_artifact(session, job.id, kind, path)

    ride_out(store, settings.db_retry_s, "storing the job's result")
    checkpoints.clear()
    return status


def _terminal_status(reason: str, success: bool, error: str | None) -> str:
    if success:
        return JobStatus.succeeded.value
    if reason == StopReason.cancelled:
        return JobStatus.cancelled.value
    if error is not None:
        return JobStatus.error.value
    if reason == StopReason.budget:
        return JobStatus.budget_exhausted.value
    return JobStatus.failed.value


def _write_artifacts(job_id: str, clip: np.ndarray, settings: Settings) -> dict[str, Path]:
    folder = settings.artifact_dir / job_id
    folder.mkdir(parents=True, exist_ok=True)
    npy, mkv = folder / "adversarial.npy", folder / "adversarial.mkv"
    write_npy(clip, npy)
    mkv.write_bytes(encode_ffv1(clip))
    return {"adversarial_npy": npy, "adversarial_mkv": mkv}


def _upsert_artifact(session, job_id: str, kind: str, path: Path) -> None:
    data = path.read_bytes()
    existing = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))
    artifact = existing or Artifact(job_id=job_id, kind=kind)
    artifact.path, artifact.sha256, artifact.size_bytes = (
        str(path), hashlib.sha256(data).hexdigest(), len(data)
    )
    session.add(artifact)


def _artifact_path(job_id: str, kind: str) -> Path:
    with session_scope() as session:
        return Path(
            session.scalar(select(Artifact.path).where(Artifact.job_id == job_id, Artifact.kind == kind))
        )

