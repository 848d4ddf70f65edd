from __future__ import annotations

import kombu.exceptions
import pytest
import sqlalchemy.exc
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from api import errors
from model_server.client import OracleUnavailable


def test_describe_error_names_the_query_parameter_and_value() -> None:
    error = {"type": "greater_than_equal", "loc": ("query", "limit"), "msg": "Input should be >= 1",
             "input": "0"}
    assert errors.describe_error(error) == "query parameter 'limit': Input should be >= 1 (got '0')"


def test_describe_error_with_prefix_for_attack_params() -> None:
    extra = {"type": "extra_forbidden", "loc": ("foo",), "msg": "x", "input": 1}
    assert errors.describe_error(extra, "params") == "params.foo: unknown field"
    assert errors.describe_error({"type": "missing", "loc": ("body", "x"), "msg": "Field required"}) == (
        "body field 'x': is required"
    )


def test_describe_errors_joins_every_problem() -> None:
    text = errors.describe_errors(
        [{"type": "a", "loc": ("e",), "msg": "bad", "input": 3},
         {"type": "b", "loc": ("f",), "msg": "worse"}],
        "params",
    )
    assert text == "params.e: bad (got 3); params.f: worse"


def _app_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom(limit: int = 1) -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("exc", "word"),
    [
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused")), "database"),
        (OracleUnavailable("oracle unreachable: refused"), "TorchServe"),
        (kombu.exceptions.OperationalError("Error 111 connecting"), "broker"),
    ],
)
def test_outages_are_503_with_retry_after(exc: Exception, word: str) -> None:
    response = _app_raising(exc).get("/boom")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert set(response.json()) == {"detail"} and word in response.json()["detail"]


def test_unexpected_errors_are_500_in_the_same_shape() -> None:
    response = _app_raising(RuntimeError("secret internals")).get("/boom")
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["detail"] and "secret" not in response.json()["detail"]


def test_http_exceptions_keep_their_message_and_routes_get_advice() -> None:
    client = _app_raising(HTTPException(409, "not ready: job is running"))
    assert client.get("/boom").json() == {"detail": "not ready: job is running"}
    assert "/docs" in client.get("/nowhere").json()["detail"]
    assert client.post("/boom").status_code == 405
    assert "POST is not allowed" in client.post("/boom").json()["detail"]


def test_request_validation_is_one_readable_sentence() -> None:
    response = _app_raising(RuntimeError()).get("/boom?limit=abc")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("query parameter 'limit': Input should be a valid integer")
    assert detail.endswith("(got 'abc')")
