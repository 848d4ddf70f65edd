"""Response models: what clients see, decoupled from the database rows they are built from."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from db.models import Job, JobStatus, QueryRecord
from model_server.client import ModelSpec


def _as_utc(value: datetime) -> datetime:
    # SQLite drops the timezone of DateTime(timezone=True); every time we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def _link(url: str, available: bool) -> str | None:
    return url if available else None


class Progress(BaseModel):
    queries_used: int = Field(description="Queries spent so far, the clean-clip query included.")
    max_queries: int
    fraction: float = Field(description="queries_used / max_queries.")
    best_score: float | None = Field(
        description="Best goal score so far in [-1, 1]; positive once the goal is met."
    )
    best_distance: float | None = Field(
        None, description="The perturbation the attack is shrinking, for its best clip so far: MAP on 0-255 "
        "(hard-label attacks, once adversarial) or the L∞ ε in levels (targeted score-based attacks, which "
        "keep the target while ε comes down); null for other attacks.",
    )


class JobLinks(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self")
    adversarial_npy: str | None = Field(description="Present once the adversarial clip exists.")
    adversarial_mkv: str | None = Field(description="Lossless FFV1/Matroska; present once it exists.")
    queries: str


class JobOut(BaseModel):
    id: str
    kind: Literal["attack", "pretrain"] = Field(
        description="`attack`: an attack on the uploaded clip; `pretrain`: RLSB policy pre-training "
                    "(no clip; see /policies)."
    )
    status: JobStatus
    campaign_id: str | None = Field(description="The campaign that fanned this job out, if any.")
    clip_index: int | None = Field(
        description="The campaign clip's index in its set (the same for every attack).",
    )
    attack: str
    model: str
    goal: Literal["untargeted", "targeted"]
    target_label: int | None
    source_label: int | None = Field(
        description="The oracle's top-1 label for the clean clip (None: pretrain).",
    )
    source_label_name: str | None
    source_probability: float | None
    params: dict[str, Any] = Field(description="The attack's parameters, defaults filled in.")
    progress: Progress
    attempts: int = Field(
        description="Deliveries that ran the job: 1 normally, 0 while queued. More than 1: a worker died "
        "or lost its lease and the job resumed from its checkpoint against the same budget, drawing new "
        "random numbers, so its queries are not those an uninterrupted run with the same seed sends.",
    )
    metrics: dict[str, Any] | None
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    links: JobLinks

    @classmethod
    def from_job(cls, job: Job, artifact_kinds: set[str]) -> JobOut:
        base = f"/jobs/{job.id}"
        return cls(
            id=job.id,
            kind=job.kind,
            status=JobStatus(job.status),
            campaign_id=job.campaign_id,
            clip_index=job.clip_index,
            attack=job.attack,
            model=job.model,
            goal=job.goal,
            target_label=job.target_label,
            source_label=job.source_label,
            source_label_name=job.source_label_name,
            source_probability=job.source_probability,
            params=job.params or {},
            progress=Progress(
                queries_used=job.queries_used,
                max_queries=job.max_queries,
                fraction=round(job.queries_used / job.max_queries, 6) if job.max_queries else 0.0,
                best_score=job.best_score,
                best_distance=job.best_distance,
            ),
            attempts=job.attempts or 0,
            metrics=job.metrics,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            links=JobLinks(
                self_=base,
                adversarial_npy=_link(f"{base}/adversarial?format=npy", "adversarial_npy" in artifact_kinds),
                adversarial_mkv=_link(f"{base}/adversarial?format=mkv", "adversarial_mkv" in artifact_kinds),
                queries=f"{base}/queries",
            ),
        )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int = Field(description="Jobs matching the filter, over all pages.")
    limit: int
    offset: int


class QueryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int = Field(description="0-based order of the query within its job.")
    batch_id: int = Field(description="Which oracle request carried it (batch 0 is the clean clip).")
    clip_sha256: str = Field(description="SHA-256 of the exact uint8 T×H×W×3 bytes sent.")
    status: Literal["sent", "answered", "failed"]
    label: int | None
    label_name: str | None
    probability: float | None
    latency_ms: float | None
    error: str | None
    created_at: UtcDatetime
    answered_at: UtcDatetime | None

    @classmethod
    def from_record(cls, record: QueryRecord) -> QueryOut:
        return cls.model_validate(record)


QUERY_COLUMNS: tuple[str, ...] = tuple(QueryOut.model_fields)


class QueryPage(BaseModel):
    items: list[QueryOut]
    total: int
    limit: int
    offset: int


class AttackOut(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema of the `params` form field.")


class ModelInput(BaseModel):
    frames: int
    height: int
    width: int
    channels: int = 3
    dtype: str = "uint8"
    layout: str = Field("THWC", description="Clip layout; a request batch is N×T×H×W×C.")


class ModelOut(BaseModel):
    name: str
    labels: list[str]
    input: ModelInput
    max_clips: int = Field(description="Most clips one oracle request may carry.")
    kernels: str | None = Field(
        None, description="The float kernels the oracle computes with (torch version, device, CPU "
        "instruction set, processor). Probabilities differ in their last digits between kernels, and so do "
        "the queries of a seeded attack: a job repeats query for query only on an oracle with the same "
        "kernels.",
    )

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelOut:
        return cls(
            name=spec.name,
            labels=spec.labels,
            input=ModelInput(frames=spec.frames, height=spec.height, width=spec.width),
            max_clips=spec.max_clips,
            kernels=spec.extra.get("kernels"),
        )


class ComponentHealth(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    components: dict[str, ComponentHealth] = Field(description="database, broker and oracle.")
