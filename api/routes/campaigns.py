"""Campaigns: submit many clips × attacks × one model at once, follow them, cancel them, report on them."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from api.campaigns import CampaignRequest, create_campaign
from api.deps import CurrentKey, OracleDep, SessionDep, SettingsDep, released
from api.errors import describe_errors
from api.forms import (
    FILE_FIELD,
    MAX_PARTS,
    FormError,
    UploadedFile,
    UploadTooLarge,
    human_bytes,
    read_multipart,
)
from api.reports import campaign_report, report_csv, report_html
from api.routes.jobs import Limit, Offset, page_limit
from api.schemas import UtcDatetime
from core.settings import Settings
from db.models import ApiKey, Campaign, Job, JobStatus

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


class CampaignJob(BaseModel):
    id: str
    attack: str
    clip_index: int
    target_label: int | None
    status: JobStatus
    queries_used: int


class CampaignProgress(BaseModel):
    jobs: int
    finished: int
    succeeded: int
    queries_used: int
    max_queries: int = Field(description="Sum of the jobs' budgets.")


class CampaignLinks(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self")
    report: str
    report_csv: str
    report_html: str


class CampaignOut(BaseModel):
    id: str
    model: str
    status: Literal["running", "finished"]
    goal: Literal["untargeted", "targeted"]
    target_rule: dict[str, Any]
    max_queries: int = Field(description="The budget of each job.")
    attacks: list[dict[str, Any]]
    clips: dict[str, Any]
    progress: CampaignProgress
    jobs: list[CampaignJob]
    created_at: UtcDatetime
    links: CampaignLinks

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> CampaignOut:
        jobs = campaign.jobs
        finished = [job for job in jobs if JobStatus(job.status).terminal]
        base = f"/campaigns/{campaign.id}"
        return cls(
            id=campaign.id, model=campaign.model,
            status="finished" if len(finished) == len(jobs) else "running",
            goal=campaign.goal, target_rule=campaign.target_rule, max_queries=campaign.max_queries,
            attacks=campaign.attacks, clips=campaign.clips,
            progress=CampaignProgress(
                jobs=len(jobs), finished=len(finished),
                succeeded=sum(job.status == JobStatus.succeeded.value for job in jobs),
                queries_used=sum(job.queries_used for job in jobs),
                max_queries=sum(job.max_queries for job in jobs),
            ),
            jobs=[CampaignJob(id=job.id, attack=job.attack, clip_index=job.clip_index,
                              target_label=job.target_label, status=JobStatus(job.status),
                              queries_used=job.queries_used) for job in jobs],
            created_at=campaign.created_at,
            links=CampaignLinks(self_=base, report=f"{base}/report", report_csv=f"{base}/report?format=csv",
                                report_html=f"{base}/report?format=html"),
        )


class CampaignPage(BaseModel):
    items: list[CampaignOut]
    total: int
    limit: int
    offset: int


MAX_UPLOADED_CLIPS = MAX_PARTS - 1  # every part but the `spec` field

_UPLOAD_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["spec", FILE_FIELD],
    "properties": {
        "spec": {"type": "string", "description": "The campaign as JSON, as the body of POST /campaigns "
                                                  "(its `clips` is ignored: the uploads are the clips)."},
        FILE_FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                     "description": f"Up to {MAX_UPLOADED_CLIPS} clips, one `{FILE_FIELD}` part each."},
    }}}}}}
_REFUSED = {422: {"description": "An attack, a parameter, the model, the clips or the targets are unusable; "
                                 "`detail` says which. Nothing is stored."}}


@router.post("", status_code=202, response_model=CampaignOut, summary="Start a campaign on a named clip set",
             responses=_REFUSED)
async def start_campaign(body: CampaignRequest, response: Response, key: CurrentKey, session: SessionDep,
                         settings: SettingsDep, oracle: OracleDep) -> CampaignOut:
    """One job per (clip, attack), all with the same clips, targets and budget; queued at once."""
    campaign = await run_in_threadpool(create_campaign, session, key, body, oracle, settings)
    response.headers["Location"] = f"/campaigns/{campaign.id}"
    return CampaignOut.from_campaign(campaign)


@router.post("/upload", status_code=202, response_model=CampaignOut,
             summary="Start a campaign on uploaded clips",
             openapi_extra=_UPLOAD_FORM, responses={**_REFUSED, 413: {"description": "A clip is too large."}})
async def start_uploaded_campaign(request: Request, response: Response, key: CurrentKey, session: SessionDep,
                                  settings: SettingsDep, oracle: OracleDep) -> CampaignOut:
    """As POST /campaigns, with your clips: `spec` (the JSON) and `video` parts, decoded like a job's
    upload."""
    body, uploads = await _read_campaign(request, settings)
    campaign = await run_in_threadpool(create_campaign, session, key, body, oracle, settings, uploads)
    response.headers["Location"] = f"/campaigns/{campaign.id}"
    return CampaignOut.from_campaign(campaign)


async def _read_campaign(request: Request, settings: Settings) -> tuple[CampaignRequest, list[UploadedFile]]:
    try:
        form = await read_multipart(request, settings.max_upload_bytes, max_files=MAX_UPLOADED_CLIPS)
        if "spec" not in form.fields:
            raise HTTPException(422, "a multipart campaign needs a `spec` field with the campaign's JSON")
        if not form.files or not all(f.data for f in form.files):
            raise HTTPException(422, f"a multipart campaign needs its clips as non-empty "
                                     f"`{FILE_FIELD}` parts")
        return CampaignRequest.model_validate_json(form.fields["spec"]), form.files
    except ValidationError as exc:
        raise HTTPException(422, f"{describe_errors(exc.errors(), prefix='body')}; "
                                 "see POST /campaigns in /docs") from exc
    except UploadTooLarge as exc:
        raise HTTPException(413, f"a clip is larger than the {human_bytes(exc.limit)} limit") from exc
    except FormError as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc


def owned_campaign(session: Session, key: ApiKey, campaign_id: str) -> Campaign:
    campaign = session.scalar(
        select(Campaign).options(selectinload(Campaign.jobs))
        .where(Campaign.id == campaign_id, Campaign.api_key_id == key.id)
    )
    if campaign is None:
        raise HTTPException(404, f"no campaign {campaign_id} for this API key; "
                                 "list yours with GET /campaigns")
    return campaign


@router.get("", response_model=CampaignPage, summary="List your campaigns, newest first")
def list_campaigns(session: SessionDep, key: CurrentKey, settings: SettingsDep, limit: Limit = None,
                   offset: Offset = 0) -> CampaignPage:
    limit = page_limit(limit, 50, settings)
    where = Campaign.api_key_id == key.id
    total = session.scalar(select(func.count()).select_from(Campaign).where(where)) or 0
    campaigns = session.scalars(
        select(Campaign).options(selectinload(Campaign.jobs)).where(where)
        .order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit).offset(offset)
    ).all()
    return released(session, CampaignPage(items=[CampaignOut.from_campaign(c) for c in campaigns],
                                          total=total, limit=limit, offset=offset))


@router.get("/{campaign_id}", response_model=CampaignOut, summary="A campaign's progress and jobs")
def get_campaign(campaign_id: str, session: SessionDep, key: CurrentKey) -> CampaignOut:
    return released(session, CampaignOut.from_campaign(owned_campaign(session, key, campaign_id)))


@router.delete("/{campaign_id}", status_code=202, response_model=CampaignOut, summary="Cancel all its jobs")
def cancel_campaign(campaign_id: str, session: SessionDep, key: CurrentKey) -> CampaignOut:
    """Queued jobs end at once; running ones stop at their next oracle request; finished ones stay."""
    campaign = owned_campaign(session, key, campaign_id)
    of_campaign = Job.campaign_id == campaign.id
    session.execute(update(Job).where(of_campaign, Job.status.in_(ACTIVE)).values(cancel_requested=True))
    session.execute(update(Job).where(of_campaign, Job.status == JobStatus.queued.value)
                    .values(status=JobStatus.cancelled.value, finished_at=datetime.now(UTC)))
    session.commit()
    session.expire_all()
    return released(session, CampaignOut.from_campaign(owned_campaign(session, key, campaign_id)))


@router.get("/{campaign_id}/report", summary="Per-attack metrics (JSON, CSV, or a page with plots)",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "text/html": {}}}})
def get_report(campaign_id: str, session: SessionDep, key: CurrentKey,
               format: Literal["json", "csv", "html"] = "json") -> Any:
    """Computed from the jobs' rows at the time of the request; `complete` says whether all have ended."""
    report = campaign_report(owned_campaign(session, key, campaign_id))
    if format == "csv":
        return PlainTextResponse(report_csv(report), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{campaign_id}-report.csv"'})
    if format == "html":
        return HTMLResponse(report_html(report))
    return report
