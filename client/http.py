"""`VaasClient`: one method per endpoint of the VAAS HTTP API, over httpx.

Every failure is a `VaasError` carrying the API's `{"detail": ...}` sentence and the HTTP status (None
when no answer came back: connection refused, timeout). Downloads stream to a file (through a `.part`
file renamed at the end, so an interrupted download never leaves a truncated artifact under the final
name) or to an open binary stream.

    with VaasClient("http://127.0.0.1:8000", "vaas_…") as vaas:
        job = vaas.submit_job("clip.mp4", attack="nes_pgd", max_queries=10_000)
        vaas.download_adversarial(job["id"], "adv.npy")
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Literal, Self

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_HEADER = "X-API-Key"
USER_AGENT = "vaas-cli/0.1"
CHUNK_BYTES = 1 << 16

Goal = Literal["untargeted", "targeted"]
Destination = str | os.PathLike[str] | IO[bytes]
JSON = dict[str, Any]


class VaasError(Exception):
    """The API refused a request (`status` is its HTTP status) or could not be reached (`status` None)."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        return self.detail


def normalize_url(url: str) -> str:
    """`localhost:8000/` → `http://localhost:8000`: a scheme is added when missing, trailing / dropped."""
    url = url.strip().rstrip("/")
    if not url:
        raise VaasError("the API URL is empty; pass --url or set VAAS_URL")
    if "://" not in url:
        url = "http://" + url
    return url


def error_detail(response: httpx.Response) -> str:
    """The API's `detail` sentence, or the best description of a non-VAAS error body."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, Mapping) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    text = response.text.strip() if response.content else ""
    try:
        phrase = HTTPStatus(response.status_code).phrase
    except ValueError:
        phrase = "error"
    if text and len(text) <= 300 and "<html" not in text.lower():
        return f"HTTP {response.status_code} {phrase}: {text}"
    return f"HTTP {response.status_code} {phrase} from {response.request.method} {response.request.url.path}"


class VaasClient:
    """A thin, typed wrapper over the VAAS REST API (the JSON it returns is passed through as dicts)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_url(base_url)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key:
            headers[API_KEY_HEADER] = api_key.strip()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    # ------------------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise VaasError(f"{method} {path}: no answer from {self.base_url} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise VaasError(f"cannot reach the VAAS API at {self.base_url}: {exc}") from exc
        if response.is_error and response.status_code not in accept:
            raise VaasError(error_detail(response), response.status_code)
        return response

    def _json(self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any) -> Any:
        response = self._send(method, path, accept=accept, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise VaasError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON",
                response.status_code,
            ) from exc

    def _stream(self, path: str, dest: Destination, params: Mapping[str, Any] | None = None) -> int:
        """GET `path` and write its body to `dest` chunk by chunk; returns the bytes written."""
        try:
            with self._http.stream("GET", path, params=_clean(params)) as response:
                if response.is_error:
                    response.read()
                    raise VaasError(error_detail(response), response.status_code)
                if isinstance(dest, (str, os.PathLike)):
                    return _write_atomically(Path(dest), response)
                written = 0
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    dest.write(chunk)
                    written += len(chunk)
                dest.flush()
                return written
        except httpx.TimeoutException as exc:
            raise VaasError(f"GET {path}: no answer from {self.base_url} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise VaasError(f"cannot reach the VAAS API at {self.base_url}: {exc}") from exc

    # ------------------------------------------------------------------------------ catalog
    def health(self) -> JSON:
        """GET /healthz (no key needed). A degraded service answers 503 with the same body: returned too."""
        return self._json("GET", "/healthz", accept=(503,))

    def attacks(self) -> list[JSON]:
        """GET /attacks: name, description and the JSON schema of each attack's parameters."""
        return self._json("GET", "/attacks")

    def models(self) -> list[JSON]:
        """GET /models: each served model's name, labels, input spec and max clips per request."""
        return self._json("GET", "/models")

    # ------------------------------------------------------------------------------ jobs
    def submit_job(
        self,
        video: str | os.PathLike[str],
        *,
        max_queries: int,
        attack: str | None = None,
        model: str | None = None,
        goal: Goal | None = None,
        target_label: int | None = None,
        params: Mapping[str, Any] | str | None = None,
    ) -> JSON:
        """POST /jobs (multipart): upload a clip and start an attack on it."""
        path = Path(video)
        fields: dict[str, str] = {"max_queries": str(max_queries)}
        for name, value in (("attack", attack), ("model", model), ("goal", goal),
                            ("target_label", target_label)):
            if value is not None:
                fields[name] = str(value)
        if params is not None:
            fields["params"] = params if isinstance(params, str) else json.dumps(dict(params))
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise VaasError(f"cannot read the video {str(path)!r}: {exc.strerror or exc}") from exc
        with handle:
            files = {"video": (path.name, handle, "application/octet-stream")}
            return self._json("POST", "/jobs", data=fields, files=files)

    def list_jobs(self, *, status: str | None = None, limit: int | None = None, offset: int = 0) -> JSON:
        """GET /jobs: a page `{items, total, limit, offset}`, newest first."""
        return self._json("GET", "/jobs", params=_clean({"status": status, "limit": limit, "offset": offset}))

    def get_job(self, job_id: str) -> JSON:
        """GET /jobs/{id}: status, progress and (once ended) metrics."""
        return self._json("GET", f"/jobs/{_segment(job_id)}")

    def cancel_job(self, job_id: str) -> JSON:
        """DELETE /jobs/{id}: a queued job ends at once, a running one at its next oracle round."""
        return self._json("DELETE", f"/jobs/{_segment(job_id)}")

    def download_adversarial(
        self, job_id: str, dest: Destination, format: Literal["npy", "mkv"] = "npy"
    ) -> int:
        """GET /jobs/{id}/adversarial?format=…, streamed to `dest`; returns the bytes written."""
        return self._stream(f"/jobs/{_segment(job_id)}/adversarial", dest, {"format": format})

    def queries(self, job_id: str, *, limit: int | None = None, offset: int = 0) -> JSON:
        """GET /jobs/{id}/queries: one page of the audit log, ordered by seq."""
        return self._json(
            "GET", f"/jobs/{_segment(job_id)}/queries", params=_clean({"limit": limit, "offset": offset})
        )

    def export_queries(self, job_id: str, dest: Destination, format: Literal["csv", "jsonl"] = "csv") -> int:
        """GET /jobs/{id}/queries?format=csv|jsonl: the whole audit log, streamed to `dest`."""
        return self._stream(f"/jobs/{_segment(job_id)}/queries", dest, {"format": format})

    # ------------------------------------------------------------------------------ policies
    def pretrain_policy(
        self, *, max_queries: int, model: str | None = None, goal: Goal = "untargeted",
        params: Mapping[str, Any] | None = None,
    ) -> JSON:
        """POST /policies: start RLSB policy pre-training, a job with its own budget."""
        body: JSON = {"goal": goal, "max_queries": max_queries, "params": dict(params or {})}
        if model is not None:
            body["model"] = model
        return self._json("POST", "/policies", json=body)

    def list_policies(
        self, *, model: str | None = None, goal: str | None = None, limit: int | None = None, offset: int = 0,
    ) -> JSON:
        """GET /policies: a page of pre-training jobs, newest first."""
        return self._json(
            "GET", "/policies",
            params=_clean({"model": model, "goal": goal, "limit": limit, "offset": offset}),
        )

    def get_policy(self, policy_id: str) -> JSON:
        """GET /policies/{id}: the pre-training job and its report."""
        return self._json("GET", f"/policies/{_segment(policy_id)}")

    def policy_parameters(self) -> JSON:
        """GET /policies/parameters: the JSON schema of the pre-training params."""
        return self._json("GET", "/policies/parameters")

    def download_policy(self, policy_id: str, dest: Destination) -> int:
        """GET /policies/{id}/weights, streamed to `dest`."""
        return self._stream(f"/policies/{_segment(policy_id)}/weights", dest)

    # ------------------------------------------------------------------------------ campaigns
    def create_campaign(
        self,
        *,
        attacks: list[Mapping[str, Any]],
        max_queries: int,
        model: str | None = None,
        goal: Goal = "untargeted",
        target_rule: Mapping[str, Any] | None = None,
        clips: Mapping[str, Any] | None = None,
    ) -> JSON:
        """POST /campaigns: every attack on every clip of a set; `attacks` = [{"name", "params"}].

        `target_rule` (targeted only): {"kind": "next"} | {"kind": "random", "seed"?} | {"kind": "fixed",
        "label"} | {"kind": "per_clip", "labels"}; `clips`: {"set", "per_class", "limit"}; omitted values
        take the server's defaults.
        """
        body: JSON = {
            "attacks": [{"name": a["name"], "params": dict(a.get("params") or {})} for a in attacks],
            "goal": goal,
            "max_queries": max_queries,
        }
        if model is not None:
            body = {"model": model, **body}
        if target_rule is not None:
            body["target_rule"] = dict(target_rule)
        if clips is not None:
            body["clips"] = dict(clips)
        return self._json("POST", "/campaigns", json=body)

    def list_campaigns(self, *, limit: int | None = None, offset: int = 0) -> JSON | list[JSON]:
        """GET /campaigns, newest first."""
        return self._json("GET", "/campaigns", params=_clean({"limit": limit, "offset": offset}))

    def get_campaign(self, campaign_id: str) -> JSON:
        """GET /campaigns/{id}: status, progress and its jobs."""
        return self._json("GET", f"/campaigns/{_segment(campaign_id)}")

    def cancel_campaign(self, campaign_id: str) -> JSON:
        """DELETE /campaigns/{id}: cancel the campaign's jobs that have not ended."""
        return self._json("DELETE", f"/campaigns/{_segment(campaign_id)}")

    def campaign_report(self, campaign_id: str) -> JSON:
        """GET /campaigns/{id}/report?format=json: the robustness table, one row per attack."""
        return self._json("GET", f"/campaigns/{_segment(campaign_id)}/report", params={"format": "json"})

    def export_campaign_report(
        self, campaign_id: str, dest: Destination, format: Literal["csv", "html", "json"] = "csv",
    ) -> int:
        """GET /campaigns/{id}/report?format=csv|html|json, streamed to `dest`."""
        return self._stream(f"/campaigns/{_segment(campaign_id)}/report", dest, {"format": format})


# ---------------------------------------------------------------------------------- helpers
def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the unset ones (None) and without a default offset of 0."""
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None and not (k == "offset" and v == 0)}


def _segment(value: str) -> str:
    """An id as one path segment: refuse what would walk to another route."""
    value = str(value).strip()
    if not value or "/" in value or "?" in value or "#" in value or value in {".", ".."}:
        raise VaasError(f"invalid id {value!r}")
    return value


def _write_atomically(path: Path, response: httpx.Response) -> int:
    path = path.expanduser()
    if path.parent and not path.parent.exists():
        raise VaasError(f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    partial = path.with_name(path.name + ".part")
    written = 0
    try:
        with partial.open("wb") as handle:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                handle.write(chunk)
                written += len(chunk)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise VaasError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written
