"""RLSB policies: start a pre-training job, list and fetch the policies it produces.

Pre-training (RLSB Algorithm 1) queries the oracle with attacker-owned clips, so it is a job of its own
(`kind = "pretrain"`) with its own budget and audit log (`GET /jobs/{id}/queries`), cancellable with
`DELETE /jobs/{id}` like any job and counted against the key's limits like any job (api/limits.py).
Its product is the policy: an `rlsb` attack job names one (`params.policy`) or takes the newest
finished policy of its model and goal, and reports the pre-training queries separately from its own,
as the paper does (Table 1).
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from api.deps import CurrentKey, OracleDep, SessionDep, SettingsDep, released
from api.errors import describe_errors
from api.limits import enforce_limits
from api.routes.jobs import Limit, Offset, page_limit
from api.schemas import Progress, UtcDatetime
from api.submission import describe_model, enqueue, parse_model
from core.settings import Settings
from db.models import ApiKey, Job, JobKind, JobStatus, new_id
from model_server.client import OracleHTTP

router = APIRouter(prefix="/policies", tags=["policies"])

POLICY_ARTIFACT = "policy"


class PretrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="A served model (GET /models); default: the server's.")
    goal: Literal["untargeted", "targeted"] = Field(
        "untargeted", description="The reward of Eq. 4 for this goal; targeted policies are fine-tuned "
                                  "per clip by the attack (Algorithm 2, line 1).")
    max_queries: int = Field(description="The pre-training job's own query budget.")
    params: dict[str, Any] = Field(default_factory=dict, description="Pre-training parameters "
                                   "(GET /policies/parameters for their schema).")


class PolicyLinks(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self")
    weights: str | None = Field(description="The policy file (torch state dicts); present once it exists.")
    queries: str = Field(description="The pre-training job's audit log.")


class PolicyOut(BaseModel):
    id: str = Field(description="The pre-training job's id; an rlsb job names it in params.policy.")
    model: str
    goal: Literal["untargeted", "targeted"]
    status: JobStatus
    params: dict[str, Any]
    progress: Progress
    report: dict[str, Any] | None = Field(description="What pre-training reports: queries, episodes, "
                                                      "mean reward per iteration, key frames kept.")
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    links: PolicyLinks

    @classmethod
    def from_job(cls, job: Job) -> PolicyOut:
        has_weights = any(a.kind == POLICY_ARTIFACT for a in job.artifacts)
        return cls(
            id=job.id, model=job.model, goal=job.goal, status=JobStatus(job.status), params=job.params or {},
            progress=Progress(queries_used=job.queries_used, max_queries=job.max_queries,
                              fraction=round(job.queries_used / job.max_queries, 6), best_score=None),
            report=job.metrics, error=job.error, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at,
            links=PolicyLinks(self_=f"/policies/{job.id}",
                              weights=f"/policies/{job.id}/weights" if has_weights else None,
                              queries=f"/jobs/{job.id}/queries"),
        )


class PolicyPage(BaseModel):
    items: list[PolicyOut]
    total: int
    limit: int
    offset: int


POLICY_ID = re.compile(r"[0-9a-f]{32}")


def _pretrain_params_class():
    from worker.attacks.rlsb import PretrainParams

    return PretrainParams


def owned_policy_job(session: Session, key: ApiKey, policy_id: str) -> Job:
    if not POLICY_ID.fullmatch(policy_id):  # never send a malformed id (a NUL, say) to the database
        raise HTTPException(404, f"no policy {policy_id!r:.60} for this API key: a policy id is 32 hex "
                                 "digits; list yours with GET /policies")
    job = session.scalar(
        select(Job).options(selectinload(Job.artifacts))
        .where(Job.id == policy_id, Job.api_key_id == key.id, Job.kind == JobKind.pretrain.value)
    )
    if job is None:
        raise HTTPException(404, f"no policy {policy_id} for this API key; list yours with GET /policies")
    return job


def latest_policy(session: Session, key: ApiKey, model: str, goal: str) -> Job | None:
    """The newest pre-training job of this key, model and goal that produced a policy."""
    return session.scalar(
        select(Job).join(Job.artifacts)
        .where(Job.api_key_id == key.id, Job.kind == JobKind.pretrain.value, Job.model == model,
               Job.goal == goal, Job.status == JobStatus.succeeded.value)
        .order_by(Job.finished_at.desc(), Job.id.desc()).limit(1)
    )


@router.get("/parameters", summary="JSON schema of the pre-training parameters")
def pretrain_parameters(key: CurrentKey) -> dict[str, Any]:
    return _pretrain_params_class().model_json_schema()


@router.post("", status_code=202, response_model=PolicyOut, summary="Start RLSB policy pre-training",
             responses={422: {"description": "A field is unusable; `detail` says which."},
                        403: {"description": "The key's query quota would be exceeded; nothing is stored."},
                        429: {"description": "The key's rate or active-jobs limit; nothing is stored."}})
async def start_pretraining(body: PretrainRequest, response: Response, key: CurrentKey, session: SessionDep,
                            settings: SettingsDep, oracle: OracleDep) -> PolicyOut:
    """Queue a pre-training job (RLSB Algorithm 1) with its own budget; poll it here or at /jobs/{id}."""
    job = await run_in_threadpool(_create_pretraining, session, key, body, oracle, settings)
    response.headers["Location"] = f"/policies/{job.id}"
    return PolicyOut.from_job(job)


def _create_pretraining(session: Session, key: ApiKey, body: PretrainRequest, oracle: OracleHTTP,
                        settings: Settings) -> Job:
    params_class = _pretrain_params_class()
    try:
        params = params_class.model_validate(body.params).model_dump(mode="json")
    except ValidationError as exc:
        raise HTTPException(422, f"{describe_errors(exc.errors(), prefix='params')} "
                                 "(see GET /policies/parameters)") from exc
    if not 1 <= body.max_queries <= settings.max_queries_cap:
        raise HTTPException(422, f"max_queries must be between 1 and {settings.max_queries_cap}, "
                                 f"got {body.max_queries}")
    model = parse_model(body.model or settings.default_model)
    describe_model(oracle, model)
    _require_attacker_data(model)
    # No oracle query happens at submission, so one check suffices: under the key's lock, in the
    # transaction that adds the job.
    try:
        enforce_limits(session, key, settings, new_jobs=1, new_queries=body.max_queries, lock=True)
        job = Job(id=new_id(), api_key_id=key.id, kind=JobKind.pretrain.value, attack="rlsb", model=model,
                  goal=body.goal, target_label=None, params=params, max_queries=body.max_queries,
                  queries_used=0, batches_sent=0, status=JobStatus.queued.value, cancel_requested=False,
                  attempts=0, created_at=datetime.now(UTC))
        session.add(job)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    session.refresh(job, ["artifacts"])
    enqueue(session, job)
    return job


def _require_attacker_data(model: str) -> None:
    from model_server import zoo

    if model not in zoo.MODELS or zoo.entry(model).dataset != "motion":
        raise HTTPException(
            422, f"RLSB pre-training draws clips of the model's classes from the attacker's own data; "
                 f"this service has such data only for the zoo's motion models, not {model!r}")


@router.get("", response_model=PolicyPage, summary="List your policies (pre-training jobs), newest first")
def list_policies(
    session: SessionDep, key: CurrentKey, settings: SettingsDep, limit: Limit = None, offset: Offset = 0,
    model: Annotated[str | None, Query(description="Only this model's policies.")] = None,
    goal: Literal["untargeted", "targeted"] | None = None,
) -> PolicyPage:
    limit = page_limit(limit, 50, settings)
    where = [Job.api_key_id == key.id, Job.kind == JobKind.pretrain.value]
    if model is not None:
        where.append(Job.model == model)
    if goal is not None:
        where.append(Job.goal == goal)
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    jobs = session.scalars(
        select(Job).options(selectinload(Job.artifacts)).where(*where)
        .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    ).all()
    return released(session, PolicyPage(items=[PolicyOut.from_job(job) for job in jobs], total=total,
                                        limit=limit, offset=offset))


@router.get("/{policy_id}", response_model=PolicyOut, summary="A policy and its pre-training job")
def get_policy(policy_id: str, session: SessionDep, key: CurrentKey) -> PolicyOut:
    return released(session, PolicyOut.from_job(owned_policy_job(session, key, policy_id)))


@router.get("/{policy_id}/weights", response_class=FileResponse, summary="Download the policy file",
            responses={200: {"content": {"application/octet-stream": {}}},
                       409: {"description": "Pre-training is still queued or running."}})
def download_policy(policy_id: str, session: SessionDep, key: CurrentKey) -> FileResponse:
    job = owned_policy_job(session, key, policy_id)
    artifact = next((a for a in job.artifacts if a.kind == POLICY_ARTIFACT), None)
    if artifact is None:
        if not JobStatus(job.status).terminal:
            raise HTTPException(409, f"not ready: pre-training is {job.status}; "
                                     f"poll GET /policies/{policy_id}")
        raise HTTPException(404, f"pre-training {policy_id} ended ({job.status}) without a policy")
    path = Path(artifact.path)
    if not path.is_file():
        raise HTTPException(404, f"the policy file of {policy_id} is missing from the server's storage")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{policy_id}-rlsb-policy.pt")
