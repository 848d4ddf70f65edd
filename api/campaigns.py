"""Campaigns: many clips × attacks × one model, fanned out into ordinary jobs.

Fairness (the point of a campaign): every attack gets the same clips, the same target per clip and the
same budget per job. The fan-out checks everything first (attacks and their parameters, the model, the
clips, the targets, one clean query per job), then stores the campaign and all its jobs in ONE
transaction and queues them: a refused campaign stores nothing, an accepted one is whole. Each of its
jobs counts against the key's limits (api/limits.py) like a job submitted alone: checked before the
clean queries, and again under a lock on the key in the transaction that stores them.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.forms import UploadedFile
from api.limits import enforce_limits, precheck_limits
from api.submission import (
    CleanAnswer,
    Submission,
    add_job_rows,
    check_target_range,
    decode_upload,
    describe_model,
    enqueue,
    parse_model,
    parse_params,
    query_clean,
    resolve_attack,
    resolve_policy,
)
from core.settings import Settings
from db.models import ApiKey, Campaign, Job, new_id
from model_server.client import ModelSpec, OracleHTTP

log = logging.getLogger("api")

MAX_CAMPAIGN_JOBS = 2_000


class AttackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="An attack of GET /attacks.")
    params: dict[str, Any] = Field(default_factory=dict, description="Its parameters (schema: GET /attacks).")


class NextClass(BaseModel):
    kind: Literal["next"] = "next"


class RandomOtherClass(BaseModel):
    kind: Literal["random"]
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Same seed, same targets.")


class FixedLabel(BaseModel):
    kind: Literal["fixed"]
    label: int = Field(ge=0, description="Every clip's target; clips already of this class are left out.")


class PerClip(BaseModel):
    kind: Literal["per_clip"]
    labels: list[int] = Field(description="One target per clip, in the clip set's order.")


TargetRule = Annotated[NextClass | RandomOtherClass | FixedLabel | PerClip, Field(discriminator="kind")]


class ClipSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: Literal["attack_set"] = Field("attack_set", description="The model's attack set (its card): "
                                       "correctly classified test clips, PER_CLASS of each class.")
    per_class: int = Field(2, ge=1, le=2, description="Clips of each class taken from the attack set.")
    limit: int | None = Field(None, ge=1, description="Only the first `limit` of those clips (a quick look).")


class CampaignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="A served model; default: the server's.")
    attacks: list[AttackSpec] = Field(min_length=1, max_length=32)
    goal: Literal["untargeted", "targeted"] = "untargeted"
    target_rule: TargetRule | None = Field(None, description="Targeted only; default: the next class.")
    max_queries: int = Field(ge=2, description="The budget of EVERY job (the same for all attacks).")
    clips: ClipSet = Field(default_factory=ClipSet)


@dataclass(frozen=True)
class CampaignClip:
    index: int  # in the model's attack set (its card) or the upload order: the same for every attack
    clip: np.ndarray
    label: int  # the clip's class in the set, or the oracle's label for an uploaded clip
    target: int | None
    name: str
    clean: CleanAnswer | None = None  # an uploaded clip's clean answer, read to know its label


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(422, detail)


def validated_attacks(specs: list[AttackSpec]) -> list[dict]:
    attacks = []
    for i, spec in enumerate(specs):
        try:
            cls = resolve_attack(spec.name)
            params = parse_params(cls, json.dumps(spec.params))
        except HTTPException as exc:
            raise _unprocessable(f"attacks[{i}]: {exc.detail}") from exc
        attacks.append({"name": cls.name, "params": params})
    return attacks


def load_clip_set(model: str, clips: ClipSet) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(indices in the model's attack set, clips, labels) of the chosen clips."""
    from model_server import attack_set

    if not attack_set.is_motion_model(model):
        raise _unprocessable(f"model {model!r} has no attack set in this service (only the zoo's motion "
                             "models do); name one of those")
    all_clips, labels = attack_set.clips(model)
    chosen = [i for i in range(len(all_clips)) if i % attack_set.PER_CLASS < clips.per_class][: clips.limit]
    return chosen, all_clips[chosen], labels[chosen]


def targets_for(rule: TargetRule | None, goal: str, labels: np.ndarray, classes: int) -> list[int | None]:
    """The target of each clip under the rule (None untargeted); the same for every attack."""
    if goal == "untargeted":
        if rule is not None:
            raise _unprocessable("target_rule is only used with goal=targeted; drop it or set goal=targeted")
        return [None] * len(labels)
    rule = rule or NextClass()
    if isinstance(rule, NextClass):
        return [(int(label) + 1) % classes for label in labels]
    if isinstance(rule, RandomOtherClass):
        rng = np.random.default_rng(rule.seed)
        return [int((label + rng.integers(1, classes)) % classes) for label in labels]
    if isinstance(rule, FixedLabel):
        return [rule.label] * len(labels)
    if len(rule.labels) != len(labels):
        raise _unprocessable(f"target_rule.labels has {len(rule.labels)} labels for {len(labels)} clips; "
                             "give one per clip, in the set's order")
    return list(rule.labels)


def _decode_part(index: int, upload: UploadedFile, spec: ModelSpec, settings: Settings) -> np.ndarray:
    """An uploaded clip, decoded; a refusal says which of the parts it was."""
    try:
        return decode_upload(bytes(upload.data), spec, settings)
    except HTTPException as exc:
        raise HTTPException(exc.status_code,
                            f"video[{index}] ({upload.filename or 'no name'}): {exc.detail}") from exc


def plan_clips(request: CampaignRequest, model: str, spec: ModelSpec, uploads: list[UploadedFile],
               oracle: OracleHTTP, settings: Settings) -> list[CampaignClip]:
    if uploads:
        clips = [_decode_part(i, u, spec, settings) for i, u in enumerate(uploads)]
        cleans = [query_clean(oracle, model, clip) for clip in clips]  # the first job's clean query
        indices, labels = list(range(len(clips))), np.array([c.prediction["label"] for c in cleans])
        names = [(u.filename or f"upload-{i}") for i, u in enumerate(uploads)]
    else:
        indices, clips, labels = load_clip_set(model, request.clips)
        cleans, names = [None] * len(indices), [f"{request.clips.set}/{model}/{i}.npy" for i in indices]
    targets = targets_for(request.target_rule, request.goal, labels, len(spec.labels))
    planned = []
    for index, clip, label, target, clean, name in zip(indices, clips, labels, targets, cleans, names,
                                                       strict=True):
        if target is not None:
            check_target_range(target, spec)
            if target == int(label):
                continue  # a fixed target equal to the clip's own class: left out for every attack
        planned.append(CampaignClip(index, clip, int(label), target, name, clean))
    if not planned:
        raise _unprocessable("no clip is left to attack (every clip is already of the fixed target class)")
    return planned


def create_campaign(session: Session, key: ApiKey, request: CampaignRequest, oracle: OracleHTTP,
                    settings: Settings, uploads: list[UploadedFile] | None = None) -> Campaign:
    """Validate, ask the clean answers, store the campaign and all its jobs at once, queue them.

    `uploads` (decoded to the model's input) replace the named clip set when given.
    """
    attacks = validated_attacks(request.attacks)
    model = parse_model(request.model or settings.default_model)
    if not 2 <= request.max_queries <= settings.max_queries_cap:
        raise _unprocessable(f"max_queries must be between 2 and {settings.max_queries_cap}, "
                             f"got {request.max_queries}")
    spec = describe_model(oracle, model)
    if uploads:
        # Planning asks the oracle for each upload's label. At least one clip is left after planning
        # (else 422), so a campaign whose smallest outcome is over the key's limits is refused first.
        precheck_limits(session, key, settings, len(attacks), len(attacks) * request.max_queries)
    planned = plan_clips(request, model, spec, uploads or [], oracle, settings)
    n_jobs = len(planned) * len(attacks)
    if n_jobs > MAX_CAMPAIGN_JOBS:
        raise _unprocessable(f"{len(planned)} clips × {len(attacks)} attacks is more than "
                             f"{MAX_CAMPAIGN_JOBS} jobs; split the campaign")
    precheck_limits(session, key, settings, n_jobs, n_jobs * request.max_queries)
    submissions = [_submission(session, key, attack, model, request, clip)
                   for clip in planned for attack in attacks]
    clips = [clip for clip in planned for _ in attacks]
    cleans = _clean_answers(clips, oracle, model)
    campaign = _store(session, key, request, settings, model, attacks, planned, clips, submissions, cleans,
                      uploaded=bool(uploads))
    for job in campaign.jobs:
        enqueue(session, job)
    return campaign


def _clean_answers(clips: list[CampaignClip], oracle: OracleHTTP, model: str) -> list[CleanAnswer]:
    """Each job's first query is its own clean query, as for a single job; an uploaded clip's answer read
    while planning (to learn its label) is the first query of the first of its jobs.

    Asked before the storing transaction, so the key's row is never locked while the oracle works.
    """
    answered_once: set[int] = set()
    cleans = []
    for clip in clips:
        reuse = clip.clean is not None and clip.index not in answered_once
        cleans.append(clip.clean if reuse else query_clean(oracle, model, clip.clip))
        answered_once.add(clip.index)
    return cleans


def _store(session: Session, key: ApiKey, request: CampaignRequest, settings: Settings, model: str,
           attacks: list[dict], planned: list[CampaignClip], clips: list[CampaignClip],
           submissions: list[Submission], cleans: list[CleanAnswer], uploaded: bool) -> Campaign:
    """The campaign and all its jobs in one transaction, under the key's limits: all stored, or none."""
    campaign_id = new_id()
    written: list[Path] = []
    try:
        enforce_limits(session, key, settings, new_jobs=len(submissions),
                       new_queries=len(submissions) * request.max_queries, lock=True)
        campaign = Campaign(id=campaign_id, api_key_id=key.id, model=model, goal=request.goal,
                            target_rule=(request.target_rule or NextClass()).model_dump()
                            if request.goal == "targeted" else {"kind": "none"},
                            max_queries=request.max_queries, attacks=attacks,
                            clips={**({"set": "uploaded"} if uploaded else request.clips.model_dump()),
                                   "count": len(planned), "indices": [c.index for c in planned],
                                   "names": [c.name for c in planned]})
        session.add(campaign)
        session.flush()
        for clip, submission, clean in zip(clips, submissions, cleans, strict=True):
            upload = UploadedFile(filename=clip.name, content_type=None,
                                  data=bytearray(_npy_bytes(clip.clip)))
            _, path = add_job_rows(session, key, submission, upload, clip.clip, clean, settings,
                                   campaign_id=campaign_id, clip_index=clip.index)
            written.append(path)
        session.commit()
    except BaseException:
        session.rollback()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    session.refresh(campaign)
    return campaign


def _submission(session: Session, key: ApiKey, attack: dict, model: str, request: CampaignRequest,
                clip: CampaignClip) -> Submission:
    submission = Submission(attack["name"], dict(attack["params"]), model, request.goal, clip.target,
                            request.max_queries)
    return resolve_policy(session, key, submission)


def _npy_bytes(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, clip)
    return buffer.getvalue()


def campaign_jobs_by_attack(campaign: Campaign) -> dict[str, list[Job]]:
    """The campaign's jobs grouped by attack label (name, plus its params when two share a name)."""
    labels = attack_labels(campaign.attacks)
    grouped: dict[str, list[Job]] = {label: [] for label in labels}
    for job in campaign.jobs:
        for label, attack in zip(labels, campaign.attacks, strict=True):
            if job.attack == attack["name"] and _same_params(job.params, attack["params"]):
                grouped[label].append(job)
                break
    return grouped


def attack_labels(attacks: list[dict]) -> list[str]:
    names = [a["name"] for a in attacks]
    labels = []
    for attack in attacks:
        if names.count(attack["name"]) == 1:
            labels.append(attack["name"])
        else:
            labels.append(f"{attack['name']} {json.dumps(attack['params'], sort_keys=True)}")
    return labels


def _same_params(job_params: dict, attack_params: dict) -> bool:
    stripped = {k: v for k, v in job_params.items() if k != "policy"}
    return stripped == {k: v for k, v in attack_params.items() if k != "policy"}
