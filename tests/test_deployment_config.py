"""docker-compose cannot run here; check that it parses and agrees with the settings and scripts."""
from __future__ import annotations

from pathlib import Path

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_five_services_with_healthchecks():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "torchserve", "worker", "api"}
    assert all("healthcheck" in spec for spec in services.values())


def test_gpu_is_reserved_for_torchserve_and_the_worker():
    services = _compose()["services"]
    for name in ("torchserve", "worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]


def test_every_compose_variable_is_a_setting():
    fields = {f"VAAS_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker", "api"):
        assert set(_compose()["services"][name]["environment"]) <= fields


def test_torchserve_ports_are_not_published():
    assert "ports" not in _compose()["services"]["torchserve"]
