"""What the service offers (attacks, models) and whether it is up.

The catalog needs a key like every tenant route (a deployment's model and labels are its owner's
business); only /healthz is open, so load balancers and probes need no secret.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import OracleDep, current_key
from api.errors import first_line
from api.schemas import AttackOut, ComponentHealth, Health, ModelOut
from db.session import get_engine
from model_server.client import OracleHTTP, OracleUnavailable
from worker.attacks import ATTACKS
from worker.celery_app import celery_app

log = logging.getLogger("api")
router = APIRouter(tags=["catalog"])

HEALTH_TIMEOUT_S = 5.0


@router.get(
    "/attacks", response_model=list[AttackOut], summary="Attacks and their parameters",
    dependencies=[Depends(current_key)],
)
def list_attacks() -> list[AttackOut]:
    return [
        AttackOut(name=cls.name, description=cls.description, parameters=cls.Params.model_json_schema())
        for _, cls in sorted(ATTACKS.items())
    ]


@router.get(
    "/models", response_model=list[ModelOut], summary="Models the oracle serves",
    dependencies=[Depends(current_key)],
)
def list_models(oracle: OracleDep) -> list[ModelOut]:
    models = []
    for name in sorted(oracle.list_models()):
        try:
            spec = oracle.describe(name)
        except OracleUnavailable as exc:
            # Management answered the listing, so this model alone is the problem (e.g. registered
            # without our handler's metadata): leave it out rather than fail the whole catalog.
            log.warning("model %s left out of GET /models: %s", name, exc)
            continue
        if spec is not None:  # unregistered between the two calls
            models.append(ModelOut.from_spec(spec))
    return models


# ------------------------------------------------------------------------------ health
def check_database() -> str:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))
    return "SELECT 1 answered"


def check_broker() -> str:
    with celery_app.connection_for_write(connect_timeout=HEALTH_TIMEOUT_S) as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=HEALTH_TIMEOUT_S
        )
        # Declaring the task queue goes one step past the socket (e.g. it opens the SQL broker's
        # engine), so a broker that accepts connections but cannot take messages shows as down.
        declared = connection.default_channel.queue_declare(queue=celery_app.conf.task_default_queue)
        return (
            f"{connection.transport_cls} broker at {connection.host}: "
            f"queue {declared.queue!r} holds {declared.message_count} message(s)"
        )


def check_oracle(oracle: OracleHTTP) -> str:
    if not oracle.ping():
        raise OracleUnavailable("TorchServe did not answer /ping with 200")
    return "TorchServe answers /ping"


async def _probe(check: Callable[[], str]) -> ComponentHealth:
    # Each check blocks on I/O: run it in a thread and stop waiting after a few seconds, so a hung
    # dependency makes the health check answer "down" instead of hanging the prober.
    try:
        detail = await asyncio.wait_for(run_in_threadpool(check), HEALTH_TIMEOUT_S + 1)
    except TimeoutError:
        return ComponentHealth(ok=False, detail=f"no answer within {HEALTH_TIMEOUT_S + 1:g} s")
    except Exception as exc:
        return ComponentHealth(ok=False, detail=f"{type(exc).__name__}: {first_line(exc)}")
    return ComponentHealth(ok=True, detail=detail)


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness of the database, the broker and the oracle",
    responses={503: {"model": Health, "description": "At least one component is down."}},
)
async def healthz(oracle: OracleDep) -> JSONResponse:
    names = ("database", "broker", "oracle")
    results = await asyncio.gather(
        _probe(check_database), _probe(check_broker), _probe(lambda: check_oracle(oracle))
    )
    components = dict(zip(names, results, strict=True))
    ok = all(c.ok for c in components.values())
    health = Health(status="ok" if ok else "degraded", components=components)
    return JSONResponse(health.model_dump(mode="json"), status_code=200 if ok else 503)
