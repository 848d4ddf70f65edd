"""Celery tasks: a thin shell around worker/runner.py."""
from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from worker.celery_app import RUN_ATTACK_TASK, celery_app
from worker.runner import run_job


@celery_app.task(name=RUN_ATTACK_TASK)
def run_attack(job_id: str) -> str:
    return run_job(job_id, time_limit_exc=SoftTimeLimitExceeded)
