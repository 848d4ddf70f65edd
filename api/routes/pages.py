"""Pages for people: jobs (list, live progress, frames, perturbations, audit log), campaigns, a submit
form. Server-rendered from the same rows and helpers as the JSON API, so the two always agree; a key
entered once per browser session (see api/ui.py) shows only that key's jobs, as the API does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select

from api import visuals
from api.deps import OracleDep, SessionDep, SettingsDep
from api.forms import MAX_PARTS, FormError, UploadTooLarge, human_bytes, read_multipart
from api.reports import COLUMNS as REPORT_COLUMNS
from api.reports import campaign_report, report_csv, report_plots
from api.routes.campaigns import CampaignOut, owned_campaign
from api.routes.jobs import ARTIFACT_FORMATS, JobFilter, artifact_file, export_queries, find_jobs, owned_job
from api.schemas import JobOut, QueryOut
from api.submission import DEFAULT_ATTACK, create_job, require_video, validate_fields
from api.ui import (
    COOKIE,
    PARAM_FIELD,
    PREFIX,
    PageKey,
    gather_params,
    key_from_cookie,
    param_inputs,
    safe_next,
    same_origin,
    templates,
)
from db.models import ApiKey, Campaign, Job, JobKind, JobStatus, QueryRecord
from worker.attacks import ATTACKS

router = APIRouter(prefix=PREFIX, include_in_schema=False)

JOBS_PER_PAGE = 25
LOG_ROWS_PER_PAGE = 50
CURVE_POINTS = 600
FRAME_VIEWS = ("clean", "adversarial", "perturbation", "mask")
METRIC_ROWS = (  # (key in job.metrics, label) in the order the job page shows them
    ("final_label_name", "final label"), ("final_probability", "final probability"),
    ("map", "MAP (0-255)"), ("linf", "L∞ (levels)"), ("l2", "L2 (on [0, 1])"), ("sparsity", "sparsity"),
    ("frames_perturbed", "frames perturbed"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"),
    ("wall_time_s", "wall time (s)"), ("queries_per_s", "queries per second"),
)


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status_code)


# ------------------------------------------------------------------------------ signing in and out
@router.get("", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/jobs", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None, reason: str = "") -> HTMLResponse:
    return _page(request, "login.html", next=safe_next(next), error=reason)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, key: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "") -> Response:
    same_origin(request)
    from api.keys import find_key

    found = find_key(session, key.strip())
    session.commit()
    if found is None or found.revoked_at is not None:
        why = "that key was revoked; ask an operator for a new one" if found else \
            "unknown API key; paste the whole key (it starts with vaas_)"
        return _page(request, "login.html", status_code=401, next=safe_next(next), error=why)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path=PREFIX,
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    same_origin(request)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


# ------------------------------------------------------------------------------ jobs
@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request, session: SessionDep, key: PageKey,
    status: str = "", attack: str = "", model: str = "", kind: str = "", campaign: str = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    # The filter form sends every select, "" meaning any: the API's enum parameters would refuse that.
    filter_ = JobFilter(_choice(JobStatus, "status", status), attack or None, model or None,
                        _choice(JobKind, "kind", kind), campaign or None)
    jobs, total = find_jobs(session, key, filter_, JOBS_PER_PAGE, offset)
    choices = _filter_choices(session, key)
    session.rollback()
    query = {k: v for k, v in {"status": status, "attack": attack, "model": model, "kind": kind,
                               "campaign": campaign}.items() if v}
    return _page(request, "jobs.html", jobs=jobs, total=total, offset=offset, per_page=JOBS_PER_PAGE,
                 filters=query, choices=choices, statuses=[s.value for s in JobStatus])


def _choice(enum, name: str, value: str):
    if not value:
        return None
    try:
        return enum(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be one of {', '.join(e.value for e in enum)}, "
                                 f"got {value!r:.40}") from None


def _filter_choices(session, key: ApiKey) -> dict[str, list[str]]:
    def distinct(column) -> list[str]:
        return sorted(v for v in session.scalars(select(column).where(Job.api_key_id == key.id).distinct())
                      if v)

    return {"attack": distinct(Job.attack), "model": distinct(Job.model)}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, session: SessionDep, key: PageKey,
             log_offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    job = owned_job(session, key, job_id)
    out = JobOut.from_job(job, {a.kind for a in job.artifacts})
    kinds = {a.kind for a in job.artifacts}
    log_total = session.scalar(select(func.count()).select_from(QueryRecord)
                               .where(QueryRecord.job_id == job_id)) or 0
    log_rows = [QueryOut.from_record(r) for r in session.scalars(
        select(QueryRecord).where(QueryRecord.job_id == job_id).order_by(QueryRecord.seq)
        .limit(LOG_ROWS_PER_PAGE).offset(log_offset))]
    session.rollback()
    pictures = _pictures(job) if "adversarial_npy" in kinds and "input" in kinds else None
    metrics = out.metrics or {}
    return _page(
        request, "job.html", job=out, terminal=out.status.terminal, pictures=pictures,
        metric_rows=[(key_, label, metrics.get(key_)) for key_, label in METRIC_ROWS if key_ in metrics],
        trace=json.dumps(metrics.get("attack"), indent=1, default=str) if metrics.get("attack") else None,
        downloads=_downloads(job_id, kinds), log_rows=log_rows, log_total=log_total, log_offset=log_offset,
        log_per_page=LOG_ROWS_PER_PAGE, frame_views=FRAME_VIEWS,
    )


def _load_clips(job: Job) -> tuple[np.ndarray, np.ndarray]:
    clean = np.load(artifact_file(job, "input"), allow_pickle=False)
    adversarial = np.load(artifact_file(job, "adversarial_npy"), allow_pickle=False)
    return clean, adversarial


def _pictures(job: Job) -> dict[str, Any] | None:
    try:
        clean, adversarial = _load_clips(job)
    except HTTPException:  # a file gone from storage: the page still shows everything else
        return None
    _, gain = visuals.amplified_perturbation(adversarial, clean)
    per_frame = visuals.per_frame_map(adversarial, clean)
    return {"frames": len(clean), "gain": gain, "per_frame": per_frame,
            "key_frames": [i for i, v in enumerate(per_frame) if v > 0],
            "bars": visuals.frame_bars_svg(per_frame)}


def _downloads(job_id: str, kinds: set[str]) -> list[dict[str, str]]:
    base = f"{PREFIX}/jobs/{job_id}/download"
    items = []
    for format_, (kind, _) in ARTIFACT_FORMATS.items():
        if kind in kinds:
            label = "NumPy uint8 T×H×W×3" if format_ == "npy" else "FFV1 RGB in Matroska"
            items.append({"href": f"{base}/adversarial.{format_}", "label": f"adversarial clip, {label}",
                          "kind": "lossless"})
    if "input" in kinds:
        items.append({"href": f"{base}/input.npy", "label": "clean clip as the model saw it (.npy)",
                      "kind": "lossless"})
    items += [{"href": f"{base}/queries.{f}", "label": f"audit log ({f.upper()})", "kind": "log"}
              for f in ("csv", "jsonl")]
    return items


@router.get("/jobs/{job_id}/live.json")
def job_live(job_id: str, session: SessionDep, request: Request) -> JSONResponse:
    """Progress and the oracle's probability against queries, sampled to at most ~600 points."""
    key = key_from_cookie(session, request)
    if key is None:
        raise HTTPException(401, "sign in again at /ui/login")
    job = owned_job(session, key, job_id)
    stride = visuals.stride_for(job.queries_used, CURVE_POINTS)
    rows = session.execute(
        select(QueryRecord.seq, QueryRecord.label, QueryRecord.probability)
        .where(QueryRecord.job_id == job_id, QueryRecord.status == "answered", QueryRecord.seq % stride == 0)
        .order_by(QueryRecord.seq)
    ).all()
    session.rollback()
    points = [[seq, prob, _label_role(job, label)] for seq, label, prob in rows]
    status = JobStatus(job.status)
    return JSONResponse({
        "status": status.value, "terminal": status.terminal, "queries_used": job.queries_used,
        "max_queries": job.max_queries, "best_score": job.best_score,
        "best_distance": job.best_distance, "stride": stride, "points": points,
    })


def _label_role(job: Job, label: int | None) -> str:
    if label == job.source_label:
        return "source"
    if job.target_label is not None and label == job.target_label:
        return "target"
    return "other"


@router.get("/jobs/{job_id}/frames/{view}.png")
def job_frames(job_id: str, view: Literal["clean", "adversarial", "perturbation", "mask"],
               session: SessionDep, key: PageKey) -> Response:
    job = owned_job(session, key, job_id)
    session.rollback()
    clean, adversarial = _load_clips(job)
    frames = {
        "clean": lambda: clean,
        "adversarial": lambda: adversarial,
        "perturbation": lambda: visuals.amplified_perturbation(adversarial, clean)[0],
        "mask": lambda: visuals.mask_overlay(adversarial, clean),
    }[view]()
    return Response(visuals.png(visuals.strip(frames)), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/jobs/{job_id}/preview.webm")
def job_preview(job_id: str, session: SessionDep, key: PageKey) -> Response:
    job = owned_job(session, key, job_id)
    session.rollback()
    clean, adversarial = _load_clips(job)
    return Response(visuals.preview_webm(clean, adversarial), media_type="video/webm",
                    headers={"Cache-Control": "private, max-age=3600",
                             "Content-Disposition": f'inline; filename="{job_id}-preview-LOSSY.webm"'})


@router.get("/jobs/{job_id}/download/{name}")
def job_download(job_id: str, name: Literal["adversarial.npy", "adversarial.mkv", "input.npy", "queries.csv",
                                             "queries.jsonl"], session: SessionDep, key: PageKey) -> Response:
    job = owned_job(session, key, job_id)
    session.rollback()
    stem, format_ = name.split(".")
    if stem == "queries":
        return export_queries(job_id, format_)
    kind, media_type = ("input", "application/octet-stream") if stem == "input" else ARTIFACT_FORMATS[format_]
    path: Path = artifact_file(job, kind)
    return FileResponse(path, media_type=media_type, filename=f"{job_id}-{name}")


# ------------------------------------------------------------------------------ submitting
def _attack_forms() -> list[dict[str, Any]]:
    return [{"name": name, "description": cls.description,
             "inputs": param_inputs(cls.Params.model_json_schema())}
            for name, cls in sorted(ATTACKS.items())]


def _models(oracle) -> list[dict[str, Any]]:
    models = []
    for name in sorted(oracle.list_models()):
        spec = oracle.describe(name)
        if spec is not None:
            models.append({"name": name, "labels": spec.labels})
    return models


@router.get("/submit", response_class=HTMLResponse)
def submit_form(request: Request, key: PageKey, oracle: OracleDep, settings: SettingsDep,
                attack: str | None = None) -> HTMLResponse:
    """`?attack=NAME` preselects an attack: without JavaScript, its parameter inputs are the ones shown."""
    return _submit_page(request, oracle, settings, {"attack": attack} if attack in ATTACKS else {})


def _submit_page(request: Request, oracle, settings, values: dict[str, str], error: str = "",
                 status_code: int = 200) -> HTMLResponse:
    return _page(request, "submit.html", status_code=status_code, attacks=_attack_forms(),
                 models=_models(oracle),
                 values={"attack": DEFAULT_ATTACK, "model": settings.default_model, "goal": "untargeted",
                         "max_queries": "5000", **values},
                 error=error, max_queries_cap=settings.max_queries_cap,
                 max_upload=human_bytes(settings.max_upload_bytes))


@router.post("/jobs", response_class=HTMLResponse)
async def submit(request: Request, session: SessionDep, key: PageKey, settings: SettingsDep,
                 oracle: OracleDep) -> Response:
    """The form's fields are POST /jobs' fields, with the parameter inputs gathered into `params`."""
    same_origin(request)
    fields: dict[str, str] = {}
    try:
        form = await read_multipart(request, settings.max_upload_bytes, max_parts=SUBMIT_FORM_PARTS)
        fields = dict(form.fields)  # all of them, so that a refused form comes back filled in
        submission = validate_fields(_job_fields(fields), settings)
        upload = require_video(form.file)
        job = await run_in_threadpool(create_job, session, key, submission, upload, oracle, settings)
    except UploadTooLarge as exc:
        return _submit_page(request, oracle, settings, exc.form.fields, status_code=413,
                            error=f"the video is larger than the {human_bytes(exc.limit)} limit; "
                                  "trim or downscale it")
    except FormError as exc:
        return _submit_page(request, oracle, settings, fields, exc.detail, exc.status_code)
    except HTTPException as exc:
        if exc.status_code >= 500:
            raise
        return _submit_page(request, oracle, settings, fields, str(exc.detail), exc.status_code)
    return RedirectResponse(f"{PREFIX}/jobs/{job.id}", status_code=303)


# POST /jobs' fields plus the inputs of the attack with the most parameters (only the chosen attack's
# inputs are enabled, so only they are sent)
SUBMIT_FORM_PARTS = MAX_PARTS + max(len(cls.Params.model_fields) for cls in ATTACKS.values())


def _job_fields(form: dict[str, str]) -> dict[str, str]:
    """POST /jobs' fields from the submit form's: empty ones dropped (the API's defaults apply) and the
    per-parameter inputs gathered into `params`."""
    fields = {name: value for name, value in form.items()
              if value.strip() and not name.startswith(PARAM_FIELD)}
    attack = fields.get("attack") or DEFAULT_ATTACK
    if attack in ATTACKS:
        params = gather_params(form, attack, param_inputs(ATTACKS[attack].Params.model_json_schema()))
        if params is not None:
            fields["params"] = params
    return fields


# ------------------------------------------------------------------------------ campaigns
@router.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, session: SessionDep, key: PageKey,
                   offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    from sqlalchemy.orm import selectinload

    where = Campaign.api_key_id == key.id
    total = session.scalar(select(func.count()).select_from(Campaign).where(where)) or 0
    campaigns = [CampaignOut.from_campaign(c) for c in session.scalars(
        select(Campaign).options(selectinload(Campaign.jobs)).where(where)
        .order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(JOBS_PER_PAGE).offset(offset))]
    session.rollback()
    return _page(request, "campaigns.html", campaigns=campaigns, total=total, offset=offset,
                 per_page=JOBS_PER_PAGE)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: str, session: SessionDep, key: PageKey) -> HTMLResponse:
    campaign = owned_campaign(session, key, campaign_id)
    out = CampaignOut.from_campaign(campaign)
    report = campaign_report(campaign)
    session.rollback()
    return _page(request, "campaign.html", campaign=out, report=report, columns=REPORT_COLUMNS,
                 plots=report_plots(report))


@router.get("/campaigns/{campaign_id}/report.csv")
def campaign_report_csv(campaign_id: str, session: SessionDep, key: PageKey) -> Response:
    report = campaign_report(owned_campaign(session, key, campaign_id))
    session.rollback()
    return Response(report_csv(report), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{campaign_id}-report.csv"'})
