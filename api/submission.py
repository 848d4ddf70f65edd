"""Submitting a job: validate the form, read the clean prediction, store the job, queue it.

Checks run in a fixed order (cheapest first, the oracle last) and every failure is a 4xx that stores
nothing: no job row, no query row, no file. The clean clip's oracle answer is the job's first query
(seq 0, batch 0), so the worker starts with `queries_used = 1` and the audit log is complete. The key's
limits (api/limits.py) are checked before the oracle is asked and again, under a lock on the key, in
the transaction that stores the job.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from api.errors import describe_errors, first_line
from api.forms import FILE_FIELD, UploadedFile
from api.limits import enforce_limits, precheck_limits
from core.settings import Settings
from core.video import DecodeLimits, VideoError, clip_sha256, decode_video, write_npy
from db.models import ApiKey, Artifact, Job, JobStatus, QueryRecord, QueryStatus, new_id
from model_server.client import ModelSpec, OracleHTTP, OracleRejected
from model_server.protocol import Prediction
from worker.attacks import ATTACKS, Attack
from worker.celery_app import RUN_ATTACK_TASK, celery_app

log = logging.getLogger("api")

GOALS = ("untargeted", "targeted")
DEFAULT_ATTACK = "nes_pgd"
FORM_FIELDS = (FILE_FIELD, "attack", "model", "goal", "target_label", "max_queries", "params")
# One query is the clean clip (read here), one is held back for the worker's final verification.
MIN_QUERIES = 2
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Publishing must fail fast when the broker is down: the client is waiting on this request.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


@dataclass(frozen=True)
class Submission:
    """The validated text fields of POST /jobs."""

    attack: str
    params: dict
    model: str
    goal: str
    target_label: int | None
    max_queries: int


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=422, detail=detail)


# ------------------------------------------------------------------------ field checks (pure)
def check_unknown_fields(fields: dict[str, str]) -> None:
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        raise _unprocessable(
            f"unknown form field(s) {', '.join(unknown)}; the fields are {', '.join(FORM_FIELDS)}"
        )


def resolve_attack(name: str) -> type[Attack]:
    cls = ATTACKS.get(name.strip())
    if cls is None:
        valid = ", ".join(sorted(ATTACKS))
        raise _unprocessable(f"unknown attack {name!r}; choose one of {valid} (see GET /attacks)")
    return cls


def parse_params(attack: type[Attack], raw: str | None) -> dict:
    """The attack's parameters, validated and with its defaults filled in (as stored on the job)."""
    text = (raw or "").strip() or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _unprocessable(
            f"params is not valid JSON ({exc.msg} at character {exc.pos}); "
            'send a JSON object such as {"epsilon": 0.05}'
        ) from exc
    if not isinstance(value, dict):
        raise _unprocessable(f"params must be a JSON object, got {type(value).__name__}")
    try:
        return attack.Params.model_validate(value).model_dump(mode="json")
    except ValidationError as exc:
        hint = f"valid parameters of {attack.name}: {', '.join(attack.Params.model_fields)}"
        problems = describe_errors(exc.errors(), prefix="params")
        raise _unprocessable(f"{problems} ({hint}; see GET /attacks)") from exc


def parse_int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError as exc:
        raise _unprocessable(f"{name} must be an integer, got {raw!r:.40}") from exc


def parse_max_queries(raw: str | None, cap: int) -> int:
    if raw is None or not raw.strip():
        raise _unprocessable(
            f"max_queries is required: the query budget of the job, {MIN_QUERIES} to {cap}"
        )
    value = parse_int("max_queries", raw)
    if value <= 0 or value > cap:
        raise _unprocessable(f"max_queries must be between {MIN_QUERIES} and {cap}, got {value}")
    if value < MIN_QUERIES:
        raise _unprocessable(
            f"max_queries must be at least {MIN_QUERIES}: one query reads the clean clip's label at "
            f"submission and one is held back to verify the final adversarial clip"
        )
    return value


def parse_goal(goal: str | None, target_label: str | None) -> tuple[str, int | None]:
    goal = (goal or "untargeted").strip()
    if goal not in GOALS:
        raise _unprocessable(f"goal must be one of {', '.join(GOALS)}, got {goal!r}")
    given = target_label is not None and target_label.strip() != ""
    if goal == "targeted" and not given:
        raise _unprocessable("goal=targeted needs target_label (a label index; "
                             "see GET /models for the labels)")
    if goal == "untargeted" and given:
        raise _unprocessable("target_label is only used with goal=targeted; drop it or set goal=targeted")
    return goal, parse_int("target_label", target_label) if given else None


def parse_model(name: str) -> str:
    # The name becomes a path segment of TorchServe URLs: refuse anything that could walk elsewhere.
    name = name.strip()
    if not MODEL_NAME.fullmatch(name):
        raise _unprocessable(
            f"model name {name!r:.80} is invalid: use letters, digits, '_', '-' and '.' (see GET /models)"
        )
    return name


def validate_fields(fields: dict[str, str], settings: Settings) -> Submission:
    """All checks of the text fields, in the documented order."""
    check_unknown_fields(fields)
    attack = resolve_attack(fields.get("attack") or DEFAULT_ATTACK)
    params = parse_params(attack, fields.get("params"))
    max_queries = parse_max_queries(fields.get("max_queries"), settings.max_queries_cap)
    goal, target_label = parse_goal(fields.get("goal"), fields.get("target_label"))
    model = parse_model(fields.get("model") or settings.default_model)
    return Submission(attack.name, params, model, goal, target_label, max_queries)


def validate_partial_fields(fields: dict[str, str], settings: Settings) -> None:
    """Checks of the fields that arrived before an oversized file, so their errors still come first."""
    check_unknown_fields(fields)
    if "attack" in fields:
        attack = resolve_attack(fields["attack"])
        if "params" in fields:
            parse_params(attack, fields["params"])
    if "max_queries" in fields:
        parse_max_queries(fields["max_queries"], settings.max_queries_cap)


def require_video(upload: UploadedFile | None) -> UploadedFile:
    if upload is None:
        raise _unprocessable(
            f"missing the {FILE_FIELD!r} file field; send the clip with -F {FILE_FIELD}=@clip.mp4"
        )
    if not upload.data:
        raise _unprocessable(f"the {FILE_FIELD!r} upload is empty")
    return upload


# ------------------------------------------------------------------------ oracle-backed checks
def describe_model(oracle: OracleHTTP, model: str) -> ModelSpec:
    spec = oracle.describe(model)
    if spec is None:
        served = ", ".join(sorted(oracle.list_models())) or "none"
        raise _unprocessable(
            f"unknown model {model!r}; the served models are: {served} (see GET /models)"
        )
    return spec


def decode_upload(data: bytes, spec: ModelSpec, settings: Settings) -> np.ndarray:
    limits = DecodeLimits(settings.max_decode_frames, settings.max_decode_pixels,
                          settings.max_decode_total_pixels)
    try:
        return decode_video(data, spec.frames, (spec.height, spec.width), limits)
    except VideoError as exc:
        raise _unprocessable(f"cannot use the video: {exc}") from exc


def check_target_range(target_label: int | None, spec: ModelSpec) -> None:
    if target_label is not None and not 0 <= target_label < len(spec.labels):
        raise _unprocessable(
            f"target_label must be in [0, {len(spec.labels)}) for model {spec.name}, got {target_label} "
            "(see GET /models for the labels)"
        )


@dataclass(frozen=True)
class CleanAnswer:
    prediction: Prediction
    sent_at: datetime
    answered_at: datetime
    latency_ms: float


def query_clean(oracle: OracleHTTP, model: str, clip: np.ndarray) -> CleanAnswer:
    sent_at = datetime.now(UTC)
    started = time.perf_counter()
    try:
        (prediction,) = oracle.predict(model, clip[None])
    except OracleRejected as exc:
        # The clip was decoded to the model's own spec, so a refusal is the server's problem, not the
        # client's: a gateway error, not a 4xx.
        raise HTTPException(502, f"the model server refused the clean clip: {exc}") from exc
    latency_ms = (time.perf_counter() - started) * 1000.0
    return CleanAnswer(prediction, sent_at, datetime.now(UTC), latency_ms)


def check_target_differs(target_label: int | None, clean: Prediction) -> None:
    if target_label is not None and target_label == clean["label"]:
        raise _unprocessable(
            f"the model already predicts label {clean['label']} ({clean['label_name']}) for this clip; "
            "choose another target_label"
        )


# ------------------------------------------------------------------------ persistence
def persist_job(
    session: Session,
    key: ApiKey,
    submission: Submission,
    upload: UploadedFile,
    clip: np.ndarray,
    clean: CleanAnswer,
    settings: Settings,
) -> Job:
    """Job, its first query and its input clip: all stored, or (on any error, a limit included) none."""
    path = None
    try:
        enforce_limits(session, key, settings, new_jobs=1, new_queries=submission.max_queries, lock=True)
        job, path = add_job_rows(session, key, submission, upload, clip, clean, settings)
        session.commit()
    except BaseException:
        session.rollback()
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return job


def add_job_rows(
    session: Session,
    key: ApiKey,
    submission: Submission,
    upload: UploadedFile,
    clip: np.ndarray,
    clean: CleanAnswer,
    settings: Settings,
    **job_fields: object,
) -> tuple[Job, Path]:
    """Write the input clip and add (not commit) the job, its first query and its input artifact.

    The caller commits, or rolls back and deletes the returned file: a campaign adds all its jobs in
    one transaction this way.
    """
    job_id = new_id()
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    path = settings.upload_dir / f"{job_id}.npy"
    answer = clean.prediction
    write_npy(clip, path)
    file_bytes = path.read_bytes()
    job = Job(
        id=job_id,
        api_key_id=key.id,
        attack=submission.attack,
        model=submission.model,
        goal=submission.goal,
        target_label=submission.target_label,
        source_label=answer["label"],
        source_label_name=answer["label_name"],
        source_probability=answer["probability"],
        params=submission.params,
        max_queries=submission.max_queries,
        queries_used=1,
        batches_sent=1,
        status=JobStatus.queued.value,
        cancel_requested=False,
        input_filename=(upload.filename or "upload")[:255],
        input_sha256=hashlib.sha256(upload.data).hexdigest(),
        attempts=0,
        created_at=clean.answered_at,
        **job_fields,
    )
    session.add(job)
    session.flush()  # the job row first: the query and artifact rows reference it
    session.add_all([
        QueryRecord(
            job_id=job_id, seq=0, batch_id=0, clip_sha256=clip_sha256(clip),
            status=QueryStatus.answered.value, label=answer["label"], label_name=answer["label_name"],
            probability=answer["probability"], latency_ms=clean.latency_ms,
            created_at=clean.sent_at, answered_at=clean.answered_at,
        ),
        Artifact(
            job_id=job_id, kind="input", path=str(path),
            sha256=hashlib.sha256(file_bytes).hexdigest(), size_bytes=len(file_bytes),
        ),
    ])
    return job, path


def enqueue(session: Session, job: Job) -> None:
    """Hand the job to the workers; if the broker refuses, the job ends as error (never stuck queued)."""
    try:
        celery_app.send_task(RUN_ATTACK_TASK, args=[job.id], retry_policy=PUBLISH_RETRY)
    except Exception as exc:
        log.warning("could not queue job %s: %s", job.id, exc)
        reason = first_line(exc)
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.queued.value)
            .values(
                status=JobStatus.error.value,
                error=f"the task broker was unreachable at submission ({reason}); submit the job again",
                finished_at=datetime.now(UTC),
            )
        )
        session.commit()
        raise HTTPException(
            503,
            f"the task broker is unreachable ({reason}); job {job.id} was marked error, "
            "submit again in a few seconds",
            headers={"Retry-After": "5"},
        ) from exc


def resolve_policy(session: Session, key: ApiKey, submission: Submission) -> Submission:
    """An rlsb job records the exact policy it will use: the one it names, or the newest that fits."""
    if submission.attack != "rlsb" or submission.params.get("pretrain_inline_queries"):
        return submission
    from api.routes.policies import latest_policy, owned_policy_job

    named = submission.params.get("policy")
    if named:
        job = owned_policy_job(session, key, named)
        if job.model != submission.model or job.goal != submission.goal:
            raise _unprocessable(f"policy {named} was pre-trained for {job.model} ({job.goal}), not "
                                 f"{submission.model} ({submission.goal}); pick another (GET /policies)")
        if job.status != JobStatus.succeeded.value:
            raise _unprocessable(f"policy {named} is not ready (pre-training is {job.status}); "
                                 f"wait for it or pick another (GET /policies)")
        return submission
    job = latest_policy(session, key, submission.model, submission.goal)
    if job is None:
        raise _unprocessable(
            f"rlsb needs a pre-trained policy for {submission.model} ({submission.goal}) and this key "
            f'has none: POST /policies {{"model": "{submission.model}", "goal": "{submission.goal}", '
            f'"max_queries": 20000}} first, or set params.pretrain_inline_queries to pre-train inside '
            "this job")
    return replace(submission, params={**submission.params, "policy": job.id})


def create_job(
    session: Session,
    key: ApiKey,
    submission: Submission,
    upload: UploadedFile,
    oracle: OracleHTTP,
    settings: Settings,
) -> Job:
    """Everything after the form checks; blocking (oracle HTTP, decoding, SQL), so run it in a thread."""
    # First the key's limits, cheaply: a key over them must not cost a decode or an oracle query.
    precheck_limits(session, key, settings, new_jobs=1, new_queries=submission.max_queries)
    spec = describe_model(oracle, submission.model)
    clip = decode_upload(bytes(upload.data), spec, settings)
    check_target_range(submission.target_label, spec)
    submission = resolve_policy(session, key, submission)
    clean = query_clean(oracle, submission.model, clip)
    check_target_differs(submission.target_label, clean.prediction)
    job = persist_job(session, key, submission, upload, clip, clean, settings)
    enqueue(session, job)
    return job
