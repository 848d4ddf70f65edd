"""SQLAlchemy 2 models: API keys, jobs, the query audit log and artifacts.

The budget invariant the whole system keeps (DESIGN.md): for every job, at any time,
`count(query_log rows of the job) == jobs.queries_used <= jobs.max_queries`.
Rows and the counter change in one transaction (see worker/oracle_client.py).
"""
from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    budget_exhausted = "budget_exhausted"
    failed = "failed"  # the attack ran to its end without meeting the goal
    cancelled = "cancelled"
    error = "error"  # something broke; `error` says what

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.queued, JobStatus.running)


class QueryStatus(str, enum.Enum):
    sent = "sent"
    answered = "answered"
    failed = "failed"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Per-key limits; NULL means the server's default (Settings.key_*). Set with `python -m api.keys limits`.
    max_jobs_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_total_queries: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


class JobKind(str, enum.Enum):
    attack = "attack"  # an attack on one uploaded clip
    pretrain = "pretrain"  # RL policy pre-training (RLSB): queries the oracle with attacker-owned clips


class Job(Base):
    """A unit of work that spends oracle queries under its own budget and audit log.

    Attack jobs carry the uploaded clip and the oracle's answer for it (`source_*`, `input_*`);
    pre-training jobs have no clip, so those columns are NULL for them.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("queries_used >= 0 AND queries_used <= max_queries", name="budget_bounds"),
        Index("ix_jobs_owner_created", "api_key_id", "created_at"),
        Index("ix_jobs_owner_kind_model", "api_key_id", "kind", "model"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.attack.value,
                                      server_default=JobKind.attack.value)
    attack: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    goal: Mapped[str] = mapped_column(String(16))  # untargeted | targeted
    target_label: Mapped[int | None] = mapped_column(Integer)
    source_label: Mapped[int | None] = mapped_column(Integer)  # the oracle's label for the clean clip
    source_label_name: Mapped[str | None] = mapped_column(String(200))
    source_probability: Mapped[float | None] = mapped_column(Float)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    max_queries: Mapped[int] = mapped_column(Integer)
    queries_used: Mapped[int] = mapped_column(Integer, default=0)
    batches_sent: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(24), default=JobStatus.queued.value, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    best_score: Mapped[float | None] = mapped_column(Float)
    # MAP of the best adversarial clip (hard-label) or ε in levels of the best target-keeping clip
    # (targeted score-based): what those attacks shrink, so their progress is this, not the score.
    best_distance: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    input_filename: Mapped[str | None] = mapped_column(String(255))
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Which process runs the job, until when (renewed by its heartbeat): a redelivered task claims a job
    # only once its lease has expired, and the oracle client reserves queries only under a lease it
    # holds, so a job never runs twice at once (worker/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # last re-publish by the sweeper
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Jobs a campaign fanned out: which campaign, and which of its clips (the same index for every attack).
    campaign_id: Mapped[str | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"),
                                                    index=True)
    clip_index: Mapped[int | None] = mapped_column(Integer)

    artifacts: Mapped[list[Artifact]] = relationship(back_populates="job", cascade="all, delete-orphan")
    campaign: Mapped[Campaign | None] = relationship(back_populates="jobs")


class Campaign(Base):
    """Many clips × attacks × one model: one job per (clip, attack), all with the same clips, targets and
    budget (fairness), reported together (GET /campaigns/{id}/report)."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    model: Mapped[str] = mapped_column(String(128))
    goal: Mapped[str] = mapped_column(String(16))
    target_rule: Mapped[dict] = mapped_column(JSON)  # {"kind": "next" | "random" | "fixed" | "per_clip", …}
    max_queries: Mapped[int] = mapped_column(Integer)  # per job
    attacks: Mapped[list] = mapped_column(JSON)  # [{"name": …, "params": {… defaults filled in}}]
    clips: Mapped[dict] = mapped_column(JSON)  # where the clips came from, and how many
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="campaign", order_by="Job.clip_index")


class QueryRecord(Base):
    """One row per query (one clip evaluated by the oracle)."""

    __tablename__ = "query_log"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_query_job_seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 0-based order of the query within its job
    batch_id: Mapped[int] = mapped_column(Integer)  # which oracle request carried it
    clip_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=QueryStatus.sent.value)
    label: Mapped[int | None] = mapped_column(Integer)
    label_name: Mapped[str | None] = mapped_column(String(200))
    probability: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_artifact_job_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # input | adversarial_npy | adversarial_mkv | policy
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")
