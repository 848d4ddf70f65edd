"""Uniform JSON errors: every error body is `{"detail": "<what was wrong and how to fix it>"}`.

Clients (and the people reading their logs) get one shape and one readable sentence, never FastAPI's
list-of-dicts validation format. Infrastructure outages answer 503 with `Retry-After`, not 500: the
request was fine, a dependency was down, and retrying later is the right move. A URL holding a NUL
character is refused before routing (`RefuseNulInUrl`): no route could use it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import kombu.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_server.client import OracleUnavailable

log = logging.getLogger("api")

RETRY_AFTER_S = "5"

# Where FastAPI found a bad value, in words a client understands.
_LOCATION_WORDS = {
    "query": "query parameter",
    "path": "path parameter",
    "header": "header",
    "cookie": "cookie",
    "body": "body field",
}


def error_body(detail: str) -> dict[str, str]:
    return {"detail": detail}


def describe_error(error: Mapping[str, Any], prefix: str | None = None) -> str:
    """One pydantic/FastAPI error dict as `<where>: <message> (got <input>)`."""
    loc = [str(part) for part in error.get("loc", ())]
    if prefix is None and loc and loc[0] in _LOCATION_WORDS:
        kind, names = _LOCATION_WORDS[loc[0]], loc[1:]
        where = f"{kind} '{'.'.join(names)}'" if names else f"the request {kind.split()[0]}"
    else:
        where = ".".join([prefix, *loc] if prefix else loc) or (prefix or "the request")
    kind = error.get("type", "")
    if kind == "missing":
        return f"{where}: is required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    message = str(error.get("msg", "is invalid"))
    if "input" in error and error["input"] is not None and not isinstance(error["input"], (dict, list)):
        return f"{where}: {message} (got {error['input']!r:.80})"
    return f"{where}: {message}"


def describe_errors(errors: Iterable[Mapping[str, Any]], prefix: str | None = None) -> str:
    return "; ".join(describe_error(error, prefix) for error in errors)


def _plain_detail(status_code: int, detail: Any, request: Request) -> str:
    """Turn Starlette's bare status phrases (unknown route, wrong method) into advice."""
    if isinstance(detail, str) and detail != HTTPStatus(status_code).phrase:
        return detail
    if status_code == 404:
        return f"no endpoint at {request.url.path}; the API is described at /docs"
    if status_code == 405:
        return f"{request.method} is not allowed on {request.url.path}; see /docs for the methods it takes"
    if isinstance(detail, (list, dict)):
        return str(detail)
    return str(detail or HTTPStatus(status_code).phrase)


def _wants_page(request: Request) -> bool:
    """A person's browser on a page route gets an error page; everything else gets the JSON body."""
    return request.url.path.startswith("/ui") and "text/html" in request.headers.get("accept", "")


def _error_response(request: Request, detail: str, status_code: int,
                    headers: Mapping[str, str] | None = None) -> Response:
    if _wants_page(request):
        from api.ui import templates  # late: the page machinery is not needed by API-only callers

        return templates.TemplateResponse(request, "error.html",
                                          {"detail": detail, "status_code": status_code},
                                          status_code=status_code, headers=headers)
    return JSONResponse(error_body(detail), status_code=status_code, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return _error_response(request, _plain_detail(exc.status_code, exc.detail, request), exc.status_code,
                           getattr(exc, "headers", None))


async def _sign_in(request: Request, exc: Exception) -> Response:
    from api.ui import sign_in_url

    return RedirectResponse(sign_in_url(exc.back_to, exc.reason), status_code=303)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return _error_response(request, describe_errors(exc.errors()), 422)


def _unavailable(request: Request, what: str, exc: Exception) -> Response:
    log.warning("%s unavailable: %s", what, exc)
    return _error_response(request, f"{what} is unreachable ({first_line(exc)}); retry in a few seconds", 503,
                           {"Retry-After": RETRY_AFTER_S})


async def _database_down(request: Request, exc: Exception) -> Response:
    return _unavailable(request, "the database", exc)


async def _oracle_down(request: Request, exc: Exception) -> Response:
    return _unavailable(request, "the model server (TorchServe)", exc)


async def _broker_down(request: Request, exc: Exception) -> Response:
    return _unavailable(request, "the task broker", exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_response(request,
                           f"internal error ({type(exc).__name__}); it was logged, please report it", 500)


class RefuseNulInUrl:
    """ASGI middleware: a URL holding a NUL character (%00) is refused with 400 before any route runs.

    No id, name or filter of this API can contain a NUL, and Postgres refuses to compare text that
    does (a DataError, which would surface as a 500 from whichever route passed the value on). One
    check here covers every path and query parameter, the pages' included.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _url_has_nul(scope):
            detail = ("the URL contains a NUL character (%00), which no id, name or filter of this API "
                      "can hold")
            response = _error_response(Request(scope), detail, 400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _url_has_nul(scope: dict) -> bool:
    query = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    # SQLAlchemy appends SQL and a help URL after the first line; the first line says what broke.
    return (text[0] if text else type(exc).__name__)[:300]


def install(app: FastAPI) -> None:
    from api.ui import SignInRequired

    handlers: Sequence[tuple[type[Exception] | int, Any]] = (
        (SignInRequired, _sign_in),
        (StarletteHTTPException, _http_error),
        (RequestValidationError, _validation_error),
        (sqlalchemy.exc.OperationalError, _database_down),
        (sqlalchemy.exc.TimeoutError, _database_down),  # connection pool exhausted
        (OracleUnavailable, _oracle_down),
        (kombu.exceptions.OperationalError, _broker_down),
        (Exception, _unexpected),
    )
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
    app.add_middleware(RefuseNulInUrl)
