"""Jobs: submit, list, poll, cancel, download the adversarial clip, read the query audit log."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from api.deps import CurrentKey, OracleDep, SessionDep, SettingsDep, released
from api.forms import FILE_FIELD, FormError, UploadTooLarge, human_bytes, read_multipart
from api.schemas import QUERY_COLUMNS, JobOut, JobPage, QueryOut, QueryPage
from api.submission import (
    DEFAULT_ATTACK,
    MIN_QUERIES,
    create_job,
    require_video,
    validate_fields,
    validate_partial_fields,
)
from core.settings import Settings
from db.models import ApiKey, Job, JobKind, JobStatus, QueryRecord
from db.session import new_session

router = APIRouter(prefix="/jobs", tags=["jobs"])

EXPORT_CHUNK_ROWS = 5_000

ARTIFACT_FORMATS = {
    "npy": ("adversarial_npy", "application/octet-stream"),
    "mkv": ("adversarial_mkv", "video/x-matroska"),
}

# The form is parsed from the raw stream (see api/forms.py), so FastAPI cannot infer its schema:
# describe it here for /docs and for generated clients.
_SUBMIT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD, "max_queries"],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "The clip: mp4, avi, mkv, webm or a uint8 T×H×W×3 .npy.",
                        },
                        "attack": {
                            "type": "string", "default": DEFAULT_ATTACK, "description": "See GET /attacks.",
                        },
                        "model": {
                            "type": "string",
                            "description": "Defaults to the server's default model; see GET /models.",
                        },
                        "goal": {
                            "type": "string", "enum": ["untargeted", "targeted"], "default": "untargeted",
                        },
                        "target_label": {"type": "integer", "description": "Required iff goal=targeted."},
                        "max_queries": {
                            "type": "integer",
                            "minimum": MIN_QUERIES,
                            "description": "Query budget, the clean-clip query and the final check included.",
                        },
                        "params": {
                            "type": "string",
                            "default": "{}",
                            "description": "The attack's parameters, a JSON object (schema: GET /attacks).",
                        },
                    },
                }
            }
        },
    }
}


def _not_found(job_id: str) -> HTTPException:
    # Another key's job answers exactly like a missing one: job ids must not be probeable.
    return HTTPException(404, f"no job {job_id} for this API key; list yours with GET /jobs")


def owned_job(session: Session, key: ApiKey, job_id: str) -> Job:
    job = session.scalar(
        select(Job)
        .options(selectinload(Job.artifacts))
        .where(Job.id == job_id, Job.api_key_id == key.id)
    )
    if job is None:
        raise _not_found(job_id)
    return job


def job_out(job: Job) -> JobOut:
    return JobOut.from_job(job, {artifact.kind for artifact in job.artifacts})


def page_limit(limit: int | None, default: int, settings: Settings) -> int:
    """The page size asked for, or a default that never exceeds the server's maximum."""
    if limit is None:
        return min(default, settings.page_size_max)
    if limit > settings.page_size_max:
        raise HTTPException(422, f"limit must be at most {settings.page_size_max}; page with offset")
    return limit


# The databases' OFFSET is a signed 64-bit integer: a larger one is a database error, not an empty page.
MAX_OFFSET = 2**63 - 1
Limit = Annotated[int | None, Query(ge=1, description="Page size (default 50 jobs / 100 queries).")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET,
                              description="Rows to skip; past the last row a page is empty.")]


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit an attack job",
    openapi_extra=_SUBMIT_FORM,
    responses={
        413: {"description": "The upload is above the size limit."},
        415: {"description": "The body is not multipart/form-data."},
        422: {"description": "A field, the video or the target is unusable; `detail` says which."},
        503: {"description": "The database, the model server or the broker is unreachable."},
    },
)
async def submit_job(
    request: Request, response: Response, key: CurrentKey, session: SessionDep,
    settings: SettingsDep, oracle: OracleDep,
) -> JobOut:
    """Upload a clip and start an attack on it.

    The clean clip is decoded to the model's input and sent to the oracle once (the job's first
    query, seq 0); the job is then queued. Nothing is stored when any check fails.
    """
    try:
        form = await read_multipart(request, settings.max_upload_bytes)
    except UploadTooLarge as exc:
        validate_partial_fields(exc.form.fields, settings)  # a field error sent first still comes first
        raise HTTPException(
            413,
            f"the upload is larger than the {human_bytes(exc.limit)} ({exc.limit} bytes) limit; "
            "trim or downscale the video",
        ) from exc
    except FormError as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc
    submission = validate_fields(form.fields, settings)
    upload = require_video(form.file)
    job = await run_in_threadpool(create_job, session, key, submission, upload, oracle, settings)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.from_job(job, {"input"})


@dataclass(frozen=True)
class JobFilter:
    """Which of a key's jobs to list (the API's query parameters and the jobs page's filters)."""

    status: JobStatus | None = None
    attack: str | None = None
    model: str | None = None
    kind: JobKind | None = None
    campaign_id: str | None = None

    def where(self, key: ApiKey) -> list:
        clauses = [Job.api_key_id == key.id]
        for column, value in ((Job.status, self.status), (Job.attack, self.attack), (Job.model, self.model),
                              (Job.kind, self.kind), (Job.campaign_id, self.campaign_id)):
            if value:
                clauses.append(column == getattr(value, "value", value))
        return clauses


def find_jobs(session: Session, key: ApiKey, filter_: JobFilter, limit: int,
              offset: int) -> tuple[list[Job], int]:
    """One page of the key's jobs, newest first, and how many match over all pages."""
    where = filter_.where(key)
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    jobs = session.scalars(
        select(Job).options(selectinload(Job.artifacts)).where(*where)
        .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(jobs), total


@router.get("", response_model=JobPage, summary="List your jobs, newest first")
def list_jobs(
    session: SessionDep, key: CurrentKey, settings: SettingsDep,
    limit: Limit = None, offset: Offset = 0, status: JobStatus | None = None,
    attack: Annotated[str | None, Query(description="Only jobs of this attack.")] = None,
    model: Annotated[str | None, Query(description="Only jobs on this model.")] = None,
    kind: Annotated[JobKind | None, Query(description="attack or pretrain.")] = None,
    campaign_id: Annotated[str | None, Query(description="Only the jobs of this campaign.")] = None,
) -> JobPage:
    limit = page_limit(limit, 50, settings)
    jobs, total = find_jobs(session, key, JobFilter(status, attack, model, kind, campaign_id), limit, offset)
    return released(session, JobPage(items=[job_out(job) for job in jobs], total=total, limit=limit,
                                     offset=offset))


@router.get("/{job_id}", response_model=JobOut, summary="Poll a job")
def get_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobOut:
    return released(session, job_out(owned_job(session, key, job_id)))


@router.delete(
    "/{job_id}", status_code=202, response_model=JobOut, summary="Cancel a job",
    responses={409: {"description": "The job has already ended."}},
)
def cancel_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next oracle request."""
    job = owned_job(session, key, job_id)
    active = (JobStatus.queued.value, JobStatus.running.value)
    # Conditional UPDATEs rather than read-modify-write: the worker may claim the job concurrently.
    flagged = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(active)).values(cancel_requested=True)
    ).rowcount
    if not flagged:
        session.rollback()
        session.refresh(job)
        raise HTTPException(409, f"job {job_id} has already ended (status {job.status}); nothing to cancel")
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.cancelled.value, finished_at=datetime.now(UTC))
    )
    session.commit()
    session.refresh(job)
    return released(session, job_out(job))


@router.get(
    "/{job_id}/adversarial",
    summary="Download the adversarial clip",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}, "video/x-matroska": {}}},
        404: {"description": "No such job, or it ended without an adversarial clip."},
        409: {"description": "The job is still queued or running."},
    },
)
def download_adversarial(
    job_id: str, session: SessionDep, key: CurrentKey, format: Literal["npy", "mkv"] = "npy",
) -> FileResponse:
    """Lossless and bit-exact: `.npy` (uint8 T×H×W×3) or FFV1 RGB in Matroska."""
    job = owned_job(session, key, job_id)
    kind, media_type = ARTIFACT_FORMATS[format]
    path = artifact_file(job, kind)
    return FileResponse(path, media_type=media_type, filename=f"{job_id}-adversarial.{format}")


def artifact_file(job: Job, kind: str) -> Path:
    """Where a job's artifact lies; 409 while it may still come, 404 when it never will or is gone."""
    what = "input clip" if kind == "input" else "adversarial clip"
    artifact = next((a for a in job.artifacts if a.kind == kind), None)
    if artifact is None:
        if not JobStatus(job.status).terminal:
            raise HTTPException(409, f"not ready: job is {job.status}; poll GET /jobs/{job.id} until it ends")
        raise HTTPException(404, f"job {job.id} ended ({job.status}) without an {what}")
    path = Path(artifact.path)
    if not path.is_file():
        raise HTTPException(404, f"the {what} of job {job.id} is missing from the server's storage")
    return path


@router.get(
    "/{job_id}/queries",
    response_model=QueryPage,
    summary="The job's query audit log",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def list_queries(
    job_id: str, session: SessionDep, key: CurrentKey, settings: SettingsDep,
    limit: Limit = None, offset: Offset = 0, format: Literal["json", "csv", "jsonl"] = "json",
) -> QueryPage | StreamingResponse:
    """`json`: one page ordered by seq. `csv`/`jsonl`: the whole log as a download (limit/offset ignored)."""
    owned_job(session, key, job_id)
    if format != "json":
        return export_queries(job_id, format)
    limit = page_limit(limit, 100, settings)
    of_job = QueryRecord.job_id == job_id
    total = session.scalar(select(func.count()).select_from(QueryRecord).where(of_job)) or 0
    records = session.scalars(
        select(QueryRecord).where(of_job).order_by(QueryRecord.seq).limit(limit).offset(offset)
    ).all()
    items = [QueryOut.from_record(r) for r in records]
    return QueryPage(items=items, total=total, limit=limit, offset=offset)


# ------------------------------------------------------------------------------ log export
def iter_query_chunks(
    job_id: str,
    sessions: Callable[[], Session] = new_session,
    chunk_rows: int = EXPORT_CHUNK_ROWS,
) -> Iterator[list[QueryOut]]:
    """The whole log in seq order, a chunk at a time (keyset paging: each chunk is one indexed range)."""
    # Its own session: the response streams after the request's session has been closed.
    with sessions() as session:
        last_seq = -1
        while True:
            records = session.scalars(
                select(QueryRecord)
                .where(QueryRecord.job_id == job_id, QueryRecord.seq > last_seq)
                .order_by(QueryRecord.seq)
                .limit(chunk_rows)
            ).all()
            if not records:
                return
            yield [QueryOut.from_record(r) for r in records]
            last_seq = records[-1].seq
            session.expunge_all()  # keep memory flat over a long log


def csv_lines(chunks: Iterator[list[QueryOut]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=QUERY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rows in chunks:
        writer.writerows(row.model_dump(mode="json") for row in rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def jsonl_lines(chunks: Iterator[list[QueryOut]]) -> Iterator[str]:
    for rows in chunks:
        yield "".join(json.dumps(row.model_dump(mode="json")) + "\n" for row in rows)


def export_queries(job_id: str, format: str) -> StreamingResponse:
    chunks = iter_query_chunks(job_id)
    if format == "csv":
        body, media_type = csv_lines(chunks), "text/csv"
    else:
        body, media_type = jsonl_lines(chunks), "application/x-ndjson"
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{job_id}-queries.{format}"'},
    )
