"""Request dependencies: settings, a database session, the oracle client and the caller's API key."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from api import keys
from core.settings import Settings, get_settings
from db.models import ApiKey
from db.session import new_session
from model_server.client import OracleHTTP

SettingsDep = Annotated[Settings, Depends(get_settings)]
T = TypeVar("T")


def get_session() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def released(session: Session, response: T) -> T:
    """End the request's read transaction before the response leaves the route.

    FastAPI validates a sync route's response on a worker thread, and the session dependency closes
    only after that. Under load (100 pollers of GET /jobs/{id}) every thread ended up waiting for a
    connection while the requests holding the connections waited for a thread to serialise their
    response: the API stalled for the pool timeout (30 s). Returning the connection here breaks the
    cycle; `response` is already built, so nothing is read from the database after this.
    """
    session.rollback()
    return response


def build_oracle(settings: Settings) -> OracleHTTP:
    return OracleHTTP.from_settings(settings)


def get_oracle(request: Request) -> OracleHTTP:
    """The app's one oracle client (made in the lifespan), so connections to TorchServe are pooled."""
    oracle = getattr(request.app.state, "oracle", None)
    if oracle is None:  # an app driven without its lifespan (some test clients)
        oracle = request.app.state.oracle = build_oracle(get_settings())
    return oracle


OracleDep = Annotated[OracleHTTP, Depends(get_oracle)]

# Declared with APIKeyHeader (not a bare Header) so /docs offers an "Authorize" button.
# auto_error=False: we answer the missing-key case ourselves, with advice, in the uniform error shape.
_api_key_header = APIKeyHeader(
    name=get_settings().api_key_header,
    auto_error=False,
    description="Your VAAS API key (an operator creates one with `python -m api.keys create NAME`).",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "ApiKey"})


def current_key(
    session: SessionDep,
    settings: SettingsDep,
    presented: Annotated[str | None, Security(_api_key_header)] = None,
) -> ApiKey:
    header = settings.api_key_header
    if not presented:
        raise _unauthorized(f"missing API key: send it in the {header} header")
    key = keys.find_key(session, presented.strip())
    # End the read transaction now: a request may stream a large upload next, and an idle open
    # transaction would pin a pooled connection (and, on SQLite, a read snapshot) all that time.
    session.commit()
    if key is None:
        raise _unauthorized(f"unknown API key in the {header} header; check it was copied whole")
    if key.revoked_at is not None:
        raise _unauthorized(
            f"API key {key.prefix}… was revoked on {key.revoked_at:%Y-%m-%d}; ask an operator for a new one"
        )
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
