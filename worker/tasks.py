"""Celery tasks: a thin shell around worker/runner.py."""
from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded

from core.settings import get_settings
from worker.celery_app import RUN_ATTACK_TASK, celery_app
from worker.leases import DATABASE_DOWN, DatabaseDown
from worker.runner import run_job

log = logging.getLogger(__name__)


@celery_app.task(name=RUN_ATTACK_TASK, bind=True, max_retries=None)
def run_attack(self, job_id: str) -> str:
    try:
        return run_job(job_id, time_limit_exc=SoftTimeLimitExceeded)
    except (DatabaseDown, *DATABASE_DOWN) as exc:
        # The job stays as it was (running, its checkpoint on disk); try again once the runner's lease
        # has run out, so the retry can take the job over.
        delay = get_settings().job_lease_s + 5
        log.warning("job %s: database unreachable (%s); retrying in %.0f s", job_id, exc, delay)
        raise self.retry(countdown=delay, exc=exc) from exc
