"""Per-key limits on submission: jobs per rolling minute, jobs active at once, and lifetime queries.

Every path that creates jobs (POST /jobs and the submit page, POST /campaigns[/upload], POST /policies)
calls `enforce_limits` twice:

1. a cheap pre-check before anything expensive (decoding, the clean clip's oracle query), so a key over
   its limits costs the oracle nothing;
2. the authoritative check (`lock=True`) in the transaction that inserts the job(s). It locks the key's
   row first, so two submissions of one key are checked and inserted one after the other and can never
   overshoot a limit together.

Refusals are HTTPExceptions raised before anything is stored: 429 for the rate and the active jobs
(waiting helps), 403 for the query quota and for a request that could never fit (waiting does not).

What counts: every job of the key, whatever its kind (attack or pre-training) and however it was made
(one by one or fanned out by a campaign). The quota counts the queries spent by the key's ended jobs
plus the whole budget (`max_queries`) of its active ones: an active job may still spend all of it, so a
submission is accepted only if every job could run to its budget without the key passing its quota.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import ApiKey, Job, JobStatus

RATE_WINDOW = timedelta(seconds=60)
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
RAISE_HINT = "an operator raises it with `python -m api.keys limits {prefix} {option} N`"


@dataclass(frozen=True)
class KeyLimits:
    """A key's effective limits, and which of them are the key's own (the rest are server defaults)."""

    jobs_per_minute: int
    active_jobs: int
    total_queries: int
    own: frozenset[str] = frozenset()

    @classmethod
    def resolve(cls, settings: Settings, jobs_per_minute: int | None, active_jobs: int | None,
                total_queries: int | None) -> KeyLimits:
        values = {"jobs_per_minute": jobs_per_minute, "active_jobs": active_jobs,
                  "total_queries": total_queries}
        return cls(
            jobs_per_minute=jobs_per_minute or settings.key_jobs_per_minute,
            active_jobs=active_jobs or settings.key_active_jobs,
            total_queries=total_queries or settings.key_total_queries,
            own=frozenset(name for name, value in values.items() if value),
        )

    @classmethod
    def of(cls, key: ApiKey, settings: Settings) -> KeyLimits:
        return cls.resolve(settings, key.max_jobs_per_minute, key.max_active_jobs, key.max_total_queries)

    def origin(self, name: str) -> str:
        return "this key's own limit" if name in self.own else "the server's default"

    def describe(self) -> str:
        """One line for operators: `60 jobs/min (default), 50 active (own), 1,000 queries (default)`."""
        def tag(name: str) -> str:
            return "own" if name in self.own else "default"

        return (f"{self.jobs_per_minute} jobs/min ({tag('jobs_per_minute')}), "
                f"{self.active_jobs} active ({tag('active_jobs')}), "
                f"{self.total_queries:,} queries ({tag('total_queries')})")


@dataclass(frozen=True)
class KeyUsage:
    """What a key has in flight and has spent, read at one moment."""

    recent_created: list[datetime]  # creation times of its jobs in the rate window, oldest first
    active_jobs: int
    spent_by_ended: int  # queries used by its ended jobs
    reserved_by_active: int  # budgets (max_queries) of its active jobs

    @property
    def committed_queries(self) -> int:
        return self.spent_by_ended + self.reserved_by_active


def enforce_limits(session: Session, key: ApiKey, settings: Settings, new_jobs: int, new_queries: int,
                   *, lock: bool = False, now: datetime | None = None) -> None:
    """Refuse (HTTPException) when `new_jobs` more jobs with `new_queries` more budget would pass a limit.

    With `lock=True` the key's row is locked for the rest of the caller's transaction: call it in the
    transaction that inserts the jobs, right before the inserts, and commit (or roll back) promptly.
    """
    now = now or datetime.now(UTC)
    limits = _lock_key(session, key, settings) if lock else KeyLimits.of(key, settings)
    usage = read_usage(session, key.id, now)
    _check_total_queries(key, limits, usage, new_queries)
    _check_active_jobs(key, limits, usage, new_jobs)
    _check_rate(key, limits, usage, new_jobs, now)


def precheck_limits(session: Session, key: ApiKey, settings: Settings, new_jobs: int,
                    new_queries: int) -> None:
    """The cheap check before expensive work; it ends its read transaction either way.

    Call it with nothing pending in the session: the oracle query that usually follows may take a
    while, and an idle open transaction would pin a pooled connection all that time.
    """
    try:
        enforce_limits(session, key, settings, new_jobs, new_queries)
    except BaseException:
        session.rollback()  # not commit: after a database error only a rollback is sure to work
        raise
    session.commit()


def _lock_key(session: Session, key: ApiKey, settings: Settings) -> KeyLimits:
    """Lock the key's row until the transaction ends, and read its limits as they are now."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite ignores FOR UPDATE. A write takes its database-wide write lock until commit, which
        # serialises concurrent submissions just as well (the embedded single-machine mode).
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(name=ApiKey.name)
                        .execution_options(synchronize_session=False))
    row = session.execute(
        select(ApiKey.max_jobs_per_minute, ApiKey.max_active_jobs, ApiKey.max_total_queries)
        .where(ApiKey.id == key.id).with_for_update()
    ).one()
    return KeyLimits.resolve(settings, *row)


def read_usage(session: Session, key_id: int, now: datetime) -> KeyUsage:
    recent = session.scalars(
        select(Job.created_at).where(Job.api_key_id == key_id, Job.created_at > now - RATE_WINDOW)
        .order_by(Job.created_at)
    ).all()
    is_active = Job.status.in_(ACTIVE)
    active, spent, reserved = session.execute(
        select(
            func.coalesce(func.sum(case((is_active, 1), else_=0)), 0),
            func.coalesce(func.sum(case((is_active, 0), else_=Job.queries_used)), 0),
            func.coalesce(func.sum(case((is_active, Job.max_queries), else_=0)), 0),
        ).where(Job.api_key_id == key_id)
    ).one()
    return KeyUsage([_as_utc(t) for t in recent], int(active), int(spent), int(reserved))


def _as_utc(value: datetime) -> datetime:
    # SQLite drops the timezone of DateTime(timezone=True); every time we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _never_fits(key: ApiKey, what: str, asked: int, limit: int, origin: str, option: str) -> HTTPException:
    # Waiting cannot help, so not 429: a client that retries 429s would retry this forever.
    return HTTPException(403, f"this request would create {_jobs(asked)}, more than the {limit} {what} "
                              f"allowed to this API key ({origin}); split it into smaller requests, or "
                              + RAISE_HINT.format(prefix=key.prefix, option=option))


def _check_total_queries(key: ApiKey, limits: KeyLimits, usage: KeyUsage, new_queries: int) -> None:
    if usage.committed_queries + new_queries <= limits.total_queries:
        return
    left = max(limits.total_queries - usage.committed_queries, 0)
    raise HTTPException(
        403,
        f"query quota exceeded: this API key may use {limits.total_queries:,} queries in all "
        f"({limits.origin('total_queries')}); its ended jobs spent {usage.spent_by_ended:,} and its active "
        f"jobs hold budgets of {usage.reserved_by_active:,}, so {left:,} remain and this request asks for "
        f"{new_queries:,}. Ask for a smaller max_queries, cancel active jobs to free their unspent budgets "
        f"(DELETE /jobs/{{id}}), or have an operator raise the quota: "
        + RAISE_HINT.format(prefix=key.prefix, option="--total-queries"),
    )


def _check_active_jobs(key: ApiKey, limits: KeyLimits, usage: KeyUsage, new_jobs: int) -> None:
    if new_jobs > limits.active_jobs:
        raise _never_fits(key, "active jobs", new_jobs, limits.active_jobs, limits.origin("active_jobs"),
                          "--active-jobs")
    if usage.active_jobs + new_jobs <= limits.active_jobs:
        return
    raise HTTPException(
        429,
        f"too many active jobs: {usage.active_jobs} of this API key's jobs are queued or running and it may "
        f"have {limits.active_jobs} at once ({limits.origin('active_jobs')}); this request would add "
        f"{new_jobs}. Wait for one to end (GET /jobs?status=running) or cancel one (DELETE /jobs/{{id}}), "
        "then submit again",
    )


def _check_rate(key: ApiKey, limits: KeyLimits, usage: KeyUsage, new_jobs: int, now: datetime) -> None:
    limit = limits.jobs_per_minute
    if new_jobs > limit:
        raise _never_fits(key, "jobs per minute", new_jobs, limit, limits.origin("jobs_per_minute"),
                          "--jobs-per-minute")
    recent = usage.recent_created
    excess = len(recent) + new_jobs - limit
    if excess <= 0:
        return
    # Room for the new jobs opens when the `excess` oldest jobs of the window have aged out of it.
    frees_at = recent[excess - 1] + RATE_WINDOW
    wait_s = max(1, math.ceil((frees_at - now).total_seconds()))
    raise HTTPException(
        429,
        f"submission rate exceeded: this API key may create {limit} jobs per minute "
        f"({limits.origin('jobs_per_minute')}) and created {len(recent)} in the last 60 s; this request "
        f"would add {new_jobs}. Retry in {wait_s} s",
        headers={"Retry-After": str(wait_s)},
    )
