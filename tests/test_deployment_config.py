"""docker-compose cannot run here; check that it parses and agrees with the settings and scripts."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
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


def test_the_image_holds_every_package_the_project_installs():
    """`pip install -e .` in the image finds only what was copied; a missing package breaks its imports
    (the `vaas` console script is client.cli) only when someone runs it in a container."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = set(re.findall(r"^COPY\s+(\S+)\s+\1\s*$", (ROOT / "docker" / "Dockerfile").read_text(), re.M))
    assert {pattern.rstrip("*") for pattern in include["include"]} <= copied


def test_torchserve_ports_are_not_published():
    assert "ports" not in _compose()["services"]["torchserve"]


# ------------------------------------------------------------------------------ TorchServe lockdown
TS_SERVICE = "torchserve"
KEY_FILE = "key_file.json"


def _properties(name: str) -> dict[str, str]:
    """A TorchServe .properties file as TorchServe's Java reads it (comments dropped, \\\\ unescaped)."""
    values = {}
    for line in (ROOT / "model_server" / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().replace("\\\\", "\\")
    return values


def _torchserve_command() -> str:
    return " ".join(_compose()["services"][TS_SERVICE]["command"])


def _flag(command: str, name: str) -> str:
    return re.search(rf"{name}\s+(\S+)", command).group(1)


def _key_dir() -> str:
    """Where TorchServe writes its key file: the directory it is started from."""
    return re.search(r"cd\s+(\S+)\s+&&\s+exec\s+torchserve", _torchserve_command()).group(1)


def test_compose_torchserve_uses_the_compose_config_with_token_auth_on():
    command = _torchserve_command()
    assert "--disable-token-auth" not in command
    assert _flag(command, "--ts-config").endswith("model_server/config.compose.properties")
    config = _properties("config.compose.properties")
    assert config["disable_token_authorization"] == "false"
    assert config.get("enable_envvars_config", "false") == "false"  # TS_* variables cannot undo it
    # The api and the worker read the tokens once, at start: they must not expire under them (1 h default).
    assert float(config["token_expiration_min"]) >= 30 * 24 * 60


def test_compose_torchserve_publishes_nothing_and_keeps_metrics_in_the_container():
    spec = _compose()["services"][TS_SERVICE]
    assert "ports" not in spec and "network_mode" not in spec
    assert {str(port) for port in spec["expose"]} == {"8080", "8081"}  # never 8082
    config = _properties("config.compose.properties")
    assert urlsplit(config["metrics_address"]).hostname == "127.0.0.1"
    assert {urlsplit(config[f"{api}_address"]).port for api in ("inference", "management")} == {8080, 8081}


def test_compose_torchserve_has_no_model_api_and_loads_archives_only_from_its_store():
    config = _properties("config.compose.properties")
    assert config["enable_model_api"] == "false"
    store = _flag(_torchserve_command(), "--model-store")
    patterns = [p for p in config["allowed_urls"].split(",") if p]
    assert patterns and all(p.startswith(f"file://{store}/") for p in patterns)
    allowed = [re.compile(p, re.IGNORECASE) for p in patterns]
    assert any(p.fullmatch(f"file://{store}/mini_c3d.mar") for p in allowed)
    for url in ("https://evil.example/model.mar", "http://torchserve:8080/x.mar", "file:///etc/passwd",
                f"file://{store}/../../etc/passwd.mar", f"file://{store}/sub/x.mar"):
        assert not any(p.fullmatch(url) for p in allowed), url


def test_the_api_and_the_worker_mount_the_key_file_read_only_and_torchserve_writes_it():
    services = _compose()["services"]
    key_dir = _key_dir()
    ts_volumes = services[TS_SERVICE]["volumes"]
    volume = next(v.split(":")[0] for v in ts_volumes if v.split(":")[1] == key_dir)
    for name in ("api", "worker"):
        assert f"{volume}:{key_dir}:ro" in services[name]["volumes"], name
        assert services[name]["depends_on"][TS_SERVICE] == {"condition": "service_healthy", "restart": True}
    assert volume in _compose()["volumes"]
    log_dir = services[TS_SERVICE]["environment"]["LOG_LOCATION"]
    assert not log_dir.startswith(key_dir)  # TorchServe's logs stay out of the shared volume


def _run_entrypoint(service: str, key_file: Path, *command: str) -> subprocess.CompletedProcess:
    """The service's entrypoint as Docker runs it ($$ unescaped by compose), against `key_file`."""
    key_dir = _key_dir()
    entrypoint = [part.replace("$$", "$").replace(f"{key_dir}/{KEY_FILE}", str(key_file))
                  for part in _compose()["services"][service]["entrypoint"]]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*entrypoint, *command], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_entrypoint_hands_each_oracle_token_to_the_settings(service: str, tmp_path: Path):
    key_file = tmp_path / KEY_FILE  # the shape TorchServe 0.12 writes
    key_file.write_text(json.dumps({"management": {"key": "mgmtKEY1",
                                                   "expiration time": "2027-01-01T00:00:00Z"},
                                    "inference": {"key": "inferKEY",
                                                  "expiration time": "2027-01-01T00:00:00Z"},
                                    "API": {"key": "tokenAPI"}}))
    show = ("from core.settings import Settings; s = Settings(); "
            "print(s.oracle_token, s.oracle_management_token)")
    result = _run_entrypoint(service, key_file, sys.executable, "-c", show)
    assert result.returncode == 0, (
        "the compose entrypoint exports VAAS_ORACLE_TOKEN (inference) and VAAS_ORACLE_MANAGEMENT_TOKEN "
        "(management); TorchServe checks each API against its own token, so the settings and the oracle "
        f"client need both:\n{result.stderr[-800:]}")
    assert result.stdout.split() == ["inferKEY", "mgmtKEY1"]
    assert service in _compose()["services"] and not set(_compose()["services"][service]["environment"]) & {
        "VAAS_ORACLE_TOKEN", "VAAS_ORACLE_MANAGEMENT_TOKEN"}  # tokens never sit in the compose file


def test_the_entrypoint_refuses_to_start_without_the_key_file(tmp_path: Path):
    result = _run_entrypoint("api", tmp_path / KEY_FILE, "echo", "started")
    assert result.returncode != 0 and "started" not in result.stdout


def test_the_torchserve_healthcheck_sends_the_inference_token():
    test = _compose()["services"][TS_SERVICE]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    compile(code, "healthcheck", "exec")
    assert f"{_key_dir()}/{KEY_FILE}" in code and "['inference']['key']" in code and "Bearer" in code


def test_the_api_is_published_on_the_hosts_loopback_only():
    assert _compose()["services"]["api"]["ports"] == ["127.0.0.1:8000:8000"]


def test_the_local_torchserve_listens_on_loopback_only_without_model_api():
    config = _properties("config.properties")
    for api in ("inference", "management", "metrics"):
        assert urlsplit(config[f"{api}_address"]).hostname == "127.0.0.1", api
    assert config["enable_model_api"] == "false"
    assert not re.search(r"https?:", config["allowed_urls"])
