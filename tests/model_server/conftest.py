"""`oracle_http`: a client of a running TorchServe, started here (and stopped after) if needed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from model_server import serve
from model_server.client import OracleHTTP


@pytest.fixture(scope="session")
def oracle_http() -> Iterator[OracleHTTP]:
    client = serve.client()
    if not client.ping() and shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17, which is not installed")
    started = serve.start()
    try:
        yield client
    finally:
        client.close()
        if started:
            serve.stop()
