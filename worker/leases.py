"""One runner per job at a time: leases, their heartbeat, and riding out database outages.

A broker may deliver a job's task twice: Redis hands an unacknowledged task out again after its
visibility timeout, even while the first worker is still running it, and a killed worker's task comes
back. So a runner first takes the job's *lease* (owner + expiry, in the job's row), a heartbeat thread
renews it, and the oracle client reserves queries only while the lease is its own
(worker/oracle_client.py). A second delivery that finds a live lease leaves the job alone; one that
finds an expired lease (its runner died) takes it over and resumes against the same budget.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import sqlalchemy.exc
from sqlalchemy import update

from db.models import Job
from db.session import session_scope

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "the database is unreachable right now", as opposed to a bad statement.
DATABASE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)


class LeaseLost(Exception):
    """Another runner holds the job now (this one was presumed dead); stop without touching it."""


class DatabaseDown(Exception):
    """The database stayed unreachable for longer than `db_retry_s`; the task is retried later."""


def new_owner() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def lease_is_live(job: Job, owner: str, now: datetime | None = None) -> bool:
    """Whether another runner's lease on the job has not yet expired."""
    expires = as_utc(job.lease_expires_at)
    return job.lease_owner not in (None, owner) and expires is not None and expires > (now or utcnow())


def ride_out(operation: Callable[[], T], patience_s: float, what: str) -> T:
    """Run a database operation, retrying through an outage for up to `patience_s` seconds."""
    deadline = time.monotonic() + patience_s
    delay = 0.25
    while True:
        try:
            return operation()
        except DATABASE_DOWN as exc:
            if time.monotonic() + delay > deadline:
                raise DatabaseDown(f"the database was unreachable for {patience_s:.0f} s while {what}: "
                                   f"{str(exc).splitlines()[0][:200]}") from exc
            log.warning("database unreachable while %s; retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Heartbeat:
    """Renews a lease every quarter of its length, on a daemon thread, until stopped.

    A database outage only delays renewals (they are retried on the next beat); a renewal that finds
    the lease taken by someone else stops the beat: the runner learns it at its next reservation,
    which the lease fences in the database.
    """

    def __init__(self, job_id: str, owner: str, lease_s: float) -> None:
        self.job_id, self.owner, self.lease_s = job_id, owner, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not renew(self.job_id, self.owner, self.lease_s):
                    log.warning("job %s: lease taken over by another runner", self.job_id)
                    return
            except DATABASE_DOWN as exc:
                log.warning("job %s: could not renew the lease (%s)", self.job_id,
                            str(exc).splitlines()[0][:120])


def renew(job_id: str, owner: str, lease_s: float) -> bool:
    with session_scope() as session:
        renewed = session.execute(
            update(Job).where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        ).rowcount
    return bool(renewed)


def release(job_id: str, owner: str) -> None:
    """Give the lease up (the job ended, or this runner stops): a redelivery may take it at once."""
    try:
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                            .values(lease_owner=None, lease_expires_at=None))
    except DATABASE_DOWN:
        log.warning("job %s: could not release the lease; it expires by itself", job_id)
