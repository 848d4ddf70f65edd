"""A thin HTTP client of the oracle protocol and TorchServe's management API.

It knows nothing of jobs or budgets: the worker wraps it in a budgeted, audited client
(worker/oracle_client.py), and the API uses it only to describe models and to read the clean
prediction of an upload, which it records as the job's first query.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import numpy as np

from model_server.protocol import Prediction, ProtocolError, encode_batch, parse_answers


class OracleUnavailable(RuntimeError):
    """TorchServe could not be reached or answered with a server error."""


class OracleRejected(ValueError):
    """TorchServe refused the request (4xx); the message is the server's."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    labels: list[str]
    frames: int
    height: int
    width: int
    max_clips: int
    extra: dict = field(default_factory=dict)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class OracleHTTP:
    def __init__(
        self,
        inference_url: str,
        management_url: str,
        token: str | None = None,
        timeout_s: float = 60.0,
        management_token: str | None = None,
    ) -> None:
        # TorchServe's token auth has one token for inference and another for management; the inference
        # token is never accepted by the management API, so there is no fallback from one to the other.
        self._inference = httpx.Client(base_url=inference_url, timeout=timeout_s, headers=_bearer(token))
        self._management = httpx.Client(base_url=management_url, timeout=timeout_s,
                                        headers=_bearer(management_token))

    @classmethod
    def from_settings(cls, settings) -> OracleHTTP:
        return cls(settings.oracle_url, settings.oracle_management_url, settings.oracle_token,
                   settings.oracle_timeout_s, settings.oracle_management_token)

    def close(self) -> None:
        self._inference.close()
        self._management.close()

    def predict(self, model: str, clips: np.ndarray) -> list[Prediction]:
        """One request carrying N clips; returns N top-1 answers."""
        body = encode_batch(clips)
        try:
            response = self._inference.post(
                f"/predictions/{model}",
                content=body,
                headers={"Content-Type": "application/octet-stream"},
            )
        except httpx.HTTPError as exc:
            raise OracleUnavailable(f"oracle unreachable: {exc}") from exc
        if 400 <= response.status_code < 500:
            raise OracleRejected(_message(response))
        if response.status_code != 200:
            raise OracleUnavailable(f"oracle answered {response.status_code}: {_message(response)}")
        try:
            return parse_answers(response.json(), expected=len(clips))
        except (ValueError, ProtocolError) as exc:
            raise OracleUnavailable(f"malformed oracle answer: {exc}") from exc

    def list_models(self) -> list[str]:
        response = self._get_management("/models")
        return [m["modelName"] for m in response.get("models", [])]

    def describe(self, model: str) -> ModelSpec | None:
        """The model's labels and input spec, from the handler's customized metadata."""
        try:
            response = self._management.get(f"/models/{model}", params={"customized": "true"})
        except httpx.HTTPError as exc:
            raise OracleUnavailable(f"TorchServe management unreachable: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OracleUnavailable(f"management answered {response.status_code}: {_message(response)}")
        return _spec_from_description(model, response.json())

    def ping(self) -> bool:
        try:
            return self._inference.get("/ping").status_code == 200
        except httpx.HTTPError:
            return False

    def _get_management(self, path: str) -> dict:
        try:
            response = self._management.get(path)
        except httpx.HTTPError as exc:
            raise OracleUnavailable(f"TorchServe management unreachable: {exc}") from exc
        if response.status_code != 200:
            raise OracleUnavailable(f"management answered {response.status_code}: {_message(response)}")
        return response.json()


def _spec_from_description(model: str, description: list[dict]) -> ModelSpec:
    import json

    for entry in description:
        for worker in entry.get("workers", []) or [{}]:
            raw = entry.get("customizedMetadata") or worker.get("customizedMetadata")
            if raw:
                meta = json.loads(raw) if isinstance(raw, str) else raw
                spec = meta["input"]
                return ModelSpec(
                    name=model,
                    labels=list(meta["labels"]),
                    frames=int(spec["frames"]),
                    height=int(spec["height"]),
                    width=int(spec["width"]),
                    max_clips=int(meta.get("max_clips", 48)),
                    extra={k: v for k, v in meta.items() if k not in ("labels", "input", "max_clips")},
                )
    raise OracleUnavailable(f"model {model!r} has no customized metadata (is our handler serving it?)")


def _message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("error") or payload)[:500]
    return str(payload)[:500]
