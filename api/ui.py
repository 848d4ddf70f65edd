"""What the pages share: signing in with an API key (once per browser session), the template engine,
and the submit form's inputs generated from an attack's parameter schema.

The key a user enters is kept in a session cookie (no expiry: it goes when the browser closes),
HttpOnly so page scripts never see it, SameSite=Strict and path-limited to /ui, so other sites cannot
make the browser use it. The JSON API still takes the key only in its header: a cookie never
authorises an API call.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates

from api import keys
from api.deps import SessionDep
from db.models import ApiKey

COOKIE = "vaas_key"
PREFIX = "/ui"
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")


class SignInRequired(Exception):
    """Raised by `page_key`; answered with a redirect to the sign-in page that comes back here."""

    def __init__(self, back_to: str, reason: str = "") -> None:
        super().__init__(reason)
        self.back_to = back_to
        self.reason = reason


def sign_in_url(back_to: str, reason: str = "") -> str:
    url = f"{PREFIX}/login?next={quote(back_to, safe='')}"
    return url + (f"&reason={quote(reason, safe='')}" if reason else "")


def safe_next(target: str | None) -> str:
    """Only a path on this site may follow sign-in (never an absolute URL: no open redirect)."""
    if not target or not target.startswith(f"{PREFIX}/") or target.startswith("//"):
        return f"{PREFIX}/jobs"
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def key_from_cookie(session: SessionDep, request: Request) -> ApiKey | None:
    presented = request.cookies.get(COOKIE)
    key = keys.find_key(session, presented) if presented else None
    session.commit()  # end the read transaction: pages may stream files next
    if key is None or key.revoked_at is not None:
        return None
    return key


def page_key(request: Request, session: SessionDep) -> ApiKey:
    key = key_from_cookie(session, request)
    if key is None:
        back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        reason = "your key was revoked or is unknown" if request.cookies.get(COOKIE) else ""
        raise SignInRequired(back_to, reason)
    return key


PageKey = Annotated[ApiKey, Depends(page_key)]


def same_origin(request: Request) -> None:
    """Refuse a form post another site made the browser send (SameSite=Strict is the first guard)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "form posted from another site; open the VAAS page and submit it there")


# ------------------------------------------------------------------------------ number formatting
def number(value: Any, digits: int = 4) -> str:
    """How the pages print a metric: integers whole, floats to `digits` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # Significant digits for small values; large ones whole, never in scientific notation.
        return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value)


templates.env.filters["number"] = number


# ------------------------------------------------------------------------------ submit form inputs
@dataclass(frozen=True)
class ParamInput:
    """One input of the submit form, built from a property of an attack's JSON Schema.

    kind: integer | number | boolean | choice | json (arrays, optional values: typed as JSON) | text.
    Empty inputs are left out of `params`, so the attack's own default applies.
    """

    name: str
    kind: str
    default: str
    description: str = ""
    choices: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None


def _bounds(schema: dict) -> tuple[float | None, float | None]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    return low, high


def param_input(name: str, schema: dict) -> ParamInput:
    default = schema.get("default")
    shown_default = ("" if default is None
                     else json.dumps(default) if not isinstance(default, str) else default)
    description = schema.get("description", "")
    if "enum" in schema:
        return ParamInput(name, "choice", shown_default, description, [str(c) for c in schema["enum"]])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        low, high = _bounds(schema)
        return ParamInput(name, kind, shown_default, description, minimum=low, maximum=high)
    if kind == "boolean":
        return ParamInput(name, "boolean", shown_default, description, ["true", "false"])
    if kind == "string":
        return ParamInput(name, "text", shown_default, description)
    if not description and "anyOf" in schema:
        description = "optional"
    return ParamInput(name, "json", shown_default or "null", description + " (JSON)")


def param_inputs(schema: dict) -> list[ParamInput]:
    return [param_input(name, prop) for name, prop in schema.get("properties", {}).items()]


# The submit form names each parameter input `param:<attack>:<parameter>`, so the form works without
# JavaScript: the server gathers the chosen attack's filled-in inputs into POST /jobs' `params`.
PARAM_FIELD = "param:"


def typed_param(kind: str, raw: str) -> Any:
    """One filled-in input as its schema types it; a value that does not parse is passed on as text,
    for the API's validation to say what is wrong with it."""
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "json":
            return json.loads(raw)
    except ValueError:
        return raw
    if kind == "boolean":
        return raw == "true"
    return raw


def gather_params(fields: dict[str, str], attack: str, inputs: list[ParamInput]) -> str | None:
    """POST /jobs' `params` from the form: its `params` JSON (if any) with the chosen attack's filled-in
    inputs on top. Returns the `params` field unchanged when it is not a JSON object (the API says why)."""
    raw = fields.get("params")
    try:
        params = json.loads(raw) if raw and raw.strip() else {}
    except ValueError:
        return raw
    if not isinstance(params, dict):
        return raw
    for item in inputs:
        value = fields.get(f"{PARAM_FIELD}{attack}:{item.name}", "").strip()
        if value:
            params[item.name] = typed_param(item.kind, value)
    return json.dumps(params)
