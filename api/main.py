"""The VAAS HTTP API: `create_app()` builds it, `app` is what uvicorn serves (`uvicorn api.main:app`)."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api import errors
from api.deps import build_oracle
from api.routes import campaigns, catalog, jobs, pages, policies
from api.ui import HERE as API_DIR
from core.settings import get_settings
from db.migrate import upgrade

log = logging.getLogger("api")

DESCRIPTION = """
**VAAS** measures how robust a deployed video recognition model is against an attacker who can only
*query* it (top-1 label and probability, nothing more).

1. Pick an attack (`GET /attacks`) and a model (`GET /models`).
2. `POST /jobs` with the clip, the attack, its parameters and a query budget (`max_queries`).
   The clean clip is classified once — that is the job's first query — and the job is queued.
3. Poll `GET /jobs/{id}` until its status is terminal
   (`succeeded`, `failed`, `budget_exhausted`, `cancelled`, `error`).
4. Download the adversarial clip (`GET /jobs/{id}/adversarial?format=npy|mkv`, lossless and bit-exact)
   and the audit log of every query (`GET /jobs/{id}/queries?format=json|csv|jsonl`).

A job never spends more than `max_queries` oracle queries, and the log has exactly one row per query.
People can use the same keys in a browser: the pages at `/ui` show jobs, frames, perturbations,
query curves, campaigns and a submit form.

Authenticate with your key in the `X-API-Key` header (every route but `/healthz` needs it). Every error
body is `{"detail": "..."}` saying what was wrong and how to fix it; `503` means a backing service is
down — retry later.
"""

TAGS = [
    {"name": "jobs", "description": "Submit, poll, cancel and download attack jobs (API key required)."},
    {"name": "campaigns",
     "description": "Many clips × attacks × one model, with a report (API key required)."},
    {"name": "policies",
     "description": "RLSB policy pre-training jobs and their policies (API key required)."},
    {"name": "catalog", "description": "Attacks and models (API key required) and health (open)."},
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Migrations at start-up: a fresh deployment (or the embedded SQLite file) is usable at once.
    await run_in_threadpool(upgrade)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    app.state.oracle = build_oracle(settings)
    log.info("VAAS API ready (database migrated, oracle at %s)", settings.oracle_url)
    try:
        yield
    finally:
        app.state.oracle.close()


def create_app() -> FastAPI:
    header = get_settings().api_key_header
    app = FastAPI(
        title="VAAS — video attack-as-a-service",
        version="0.1.0",
        description=DESCRIPTION.replace("X-API-Key", header),
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url="/docs",
    )
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(campaigns.router)
    app.include_router(policies.router)
    app.include_router(catalog.router)
    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=API_DIR / "static"), name="static")
    app.add_api_route("/", lambda: RedirectResponse("/ui/jobs", status_code=303), include_in_schema=False)
    return app


app = create_app()
