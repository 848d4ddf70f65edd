"""Finds jobs whose task was lost and publishes them again. Runs in every worker's main process.

A task can be lost without any job being told: Redis restarted (it keeps nothing on disk here), or a
whole worker was SIGKILLed and its unacknowledged task waits out the broker's visibility timeout
(hours). So every `sweep_interval_s` each worker looks for
- queued jobs whose task is neither waiting in the broker's queue nor held by a worker, and
- running jobs whose lease has expired (their runner is dead) and whose task is not waiting,
and publishes their task again. Taking a job to re-publish is an UPDATE on its `requeued_at`, so with
many workers only one publishes it per lease period; a duplicate task is harmless anyway, as the
runner's claim leaves a job alone while another runner's lease is live (worker/leases.py).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.settings import Settings, get_settings
from db.models import Job, JobStatus
from worker.leases import utcnow

log = logging.getLogger(__name__)

QUEUE_KEY = "celery"  # Celery's default queue, a Redis list
UNACKED_KEY = "unacked"  # kombu's hash of delivered, unacknowledged messages


def broker_messages(broker_url: str) -> tuple[list[str], list[str]] | None:
    """(waiting, delivered-unacknowledged) raw messages, where the broker can be inspected (Redis)."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None  # the embedded SQL broker keeps its messages on disk: nothing to recover there
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        waiting = [m.decode("utf-8", "replace") for m in client.lrange(QUEUE_KEY, 0, -1)]
        delivered = [m.decode("utf-8", "replace") for m in client.hvals(UNACKED_KEY)]
    finally:
        client.close()
    return waiting, delivered


def _mentions(messages: Iterable[str], job_id: str) -> bool:
    # A task message carries its argument (the job id, 32 hex digits) in its headers' argsrepr.
    return any(job_id in message for message in messages)


def lost_jobs(candidates: list[tuple[str, str]], messages: tuple[list[str], list[str]] | None) -> list[str]:
    """Which (id, status) candidates have no task that will reach a worker."""
    lost = []
    for job_id, status in candidates:
        if messages is None:
            if status == JobStatus.running.value:  # lease expired: its runner is gone
                lost.append(job_id)
            continue
        waiting, delivered = messages
        if _mentions(waiting, job_id):
            continue
        # A running job's task held unacknowledged by a dead worker comes back only after the
        # visibility timeout; a queued job's task held by a worker is about to be claimed.
        if status == JobStatus.queued.value and _mentions(delivered, job_id):
            continue
        lost.append(job_id)
    return lost


@contextmanager
def _unpooled_session(settings: Settings) -> Iterator[Session]:
    """A connection opened for this sweep and closed after it. The sweeper runs in the worker's main
    process, which forks the pool processes: a pooled connection kept open here would be inherited
    by a child forked later, and two processes on one Postgres connection corrupt each other."""
    from db.session import make_engine

    engine = make_engine(settings.database_url, pooled=False)
    try:
        with Session(engine) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def sweep(settings: Settings, publish: Callable[[str], None],
          sessions: Callable[[], AbstractContextManager[Session]] | None = None) -> list[str]:
    """Publish the tasks of lost jobs again; returns their ids."""
    session_scope = sessions or (lambda: _unpooled_session(settings))
    now = utcnow()
    grace = now - timedelta(seconds=2 * settings.sweep_interval_s)  # a task being published right now
    once_per = now - timedelta(seconds=settings.job_lease_s)
    with session_scope() as session:
        candidates = [tuple(row) for row in session.execute(
            select(Job.id, Job.status).where(
                or_(
                    and_(Job.status == JobStatus.queued.value, Job.created_at < grace),
                    and_(Job.status == JobStatus.running.value,
                         or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)),
                ),
                or_(Job.requeued_at.is_(None), Job.requeued_at < once_per),
            )
        ).all()]
    if not candidates:
        return []
    published = []
    for job_id in lost_jobs(candidates, broker_messages(settings.broker_url)):
        with session_scope() as session:
            taken = session.execute(
                update(Job)
                .where(Job.id == job_id, or_(Job.requeued_at.is_(None), Job.requeued_at < once_per))
                .values(requeued_at=now)
            ).rowcount
        if taken:
            publish(job_id)
            published.append(job_id)
    if published:
        log.warning("re-published %d job(s) whose task was lost: %s", len(published), ", ".join(published))
    return published


class Sweeper(threading.Thread):
    def __init__(self, publish: Callable[[str], None], settings: Settings | None = None) -> None:
        super().__init__(name="vaas-sweeper", daemon=True)
        self.settings = settings or get_settings()
        self.publish = publish
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.sweep_interval_s):
            try:
                sweep(self.settings, self.publish)
            except Exception as exc:
                log.warning(
                    "sweep failed: %s", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                )
