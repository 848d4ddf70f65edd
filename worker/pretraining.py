"""Runs an RLSB pre-training job (kind `pretrain`): Algorithm 1 against the oracle, under the job's own
budget and audit log, ending with the policy stored as the job's `policy` artifact.

The oracle client is the same one attacks use (reserve → send → complete, one audit row per query),
with no query held back: a pre-training job has no final clip to verify. Progress (the report so far)
is written to the job after every PPO iteration, so `GET /policies/{id}` shows it. A redelivered job
(worker killed) starts pre-training again against what is left of the same budget.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select, update

from core.settings import Settings
from db.models import Artifact, Job, JobStatus
from db.session import new_session, session_scope
from model_server.client import OracleHTTP
from worker.leases import DATABASE_DOWN, DatabaseDown, LeaseLost, ride_out
from worker.oracle_client import JobCancelled, OracleClient, OracleFailed

log = logging.getLogger(__name__)

POLICY_ARTIFACT = "policy"


def run_pretraining(
    job: Job, settings: Settings, time_limit_exc: type[BaseException] | tuple[type[BaseException], ...] = (),
    owner: str | None = None,
) -> str:
    from model_server import dataset
    from worker.attacks.rlsb import PretrainParams, pretrain, save_policy

    http = OracleHTTP.from_settings(settings)
    oracle = OracleClient(job.id, job.model, http, new_session, max_batch=settings.oracle_max_batch,
                          held_back=0, owner=owner, db_patience_s=settings.db_retry_s,
                          outage_s=settings.oracle_outage_s)
    started = time.monotonic()
    status, error, policy, report = JobStatus.error.value, None, None, None
    try:
        params = PretrainParams.model_validate(job.params)
        if params.max_seconds is None:  # end with a policy before Celery's soft limit interrupts
            params = params.model_copy(update={"max_seconds": 0.9 * settings.task_soft_time_limit_s})
        frames = _frames_of(http, job.model)
        rng = np.random.default_rng([params.seed, job.attempts - 1])
        policy, report = pretrain(oracle, frames, job.goal, dataset.reference_clips, params, rng,
                                  progress=lambda so_far: _save_progress(job.id, so_far, started))
        status = JobStatus.succeeded.value
    except JobCancelled:
        status = JobStatus.cancelled.value
    except OracleFailed as exc:
        error = str(exc)
    except (LeaseLost, DatabaseDown):
        raise  # another runner has it, or the task is retried once the database is back
    except time_limit_exc:
        error = (
            "pre-training reached the worker's soft time limit; give it a smaller max_queries or iterations"
        )
    except Exception as exc:
        log.exception("pre-training job %s crashed", job.id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        http.close()
    blob = save_policy(policy) if policy is not None and status == JobStatus.succeeded.value else None
    return ride_out(lambda: _finish(job, status, error, report, blob, started, settings, owner),
                    settings.db_retry_s, "storing the pre-training result")


def _frames_of(http: OracleHTTP, model: str) -> int:
    spec = http.describe(model)
    if spec is None:
        raise ValueError(f"model {model!r} is no longer served")
    return spec.frames


def _save_progress(job_id: str, report: dict, started: float) -> None:
    try:
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                metrics=_json_report(report, started)))
    except DATABASE_DOWN:
        log.warning("pre-training %s: progress not stored (database unreachable)", job_id)


def _json_report(report: dict | None, started: float) -> dict:
    plain = dict(report or {})
    plain["seconds"] = round(time.monotonic() - started, 2)
    return plain


def _finish(job: Job, status: str, error: str | None, report: dict | None, blob: bytes | None,
            started: float, settings: Settings, owner: str | None) -> str:
    with session_scope() as session:
        row = session.get(Job, job.id, with_for_update=True)
        if owner is not None and row.lease_owner != owner:
            raise LeaseLost(job.id)
        row.lease_owner, row.lease_expires_at = None, None
        metrics = _json_report(report if report is not None else row.metrics, started)
        metrics["queries"] = row.queries_used
        row.status, row.error, row.metrics = status, error, metrics
        row.finished_at = datetime.now(UTC)
        if blob is not None:
            folder = settings.artifact_dir / job.id
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "rlsb-policy.pt"
            path.write_bytes(blob)
            existing = session.scalar(select(Artifact).where(Artifact.job_id == job.id,
                                                             Artifact.kind == POLICY_ARTIFACT))
            artifact = existing or Artifact(job_id=job.id, kind=POLICY_ARTIFACT)
            artifact.path, artifact.size_bytes = str(path), len(blob)
            artifact.sha256 = hashlib.sha256(blob).hexdigest()
            session.add(artifact)
    return status
