from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api import keys
from api.limits import KeyLimits
from core.settings import Settings, get_settings
from db import session as db_session
from db.models import ApiKey


def test_generated_keys_have_the_documented_shape() -> None:
    key = keys.generate_key()
    assert key.startswith("vaas_") and len(key) == 37
    assert keys.looks_like_key(key)
    assert all(c.isalnum() or c in "-_" for c in key[5:])
    assert len({keys.generate_key() for _ in range(100)}) == 100


def test_hash_is_sha256_hex_and_never_the_plaintext() -> None:
    key = keys.generate_key()
    assert keys.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key not in keys.hash_key(key)


@pytest.mark.parametrize("text", ["", "vaas_", "vaas_short", "xxxx_" + "a" * 32, "vaas_" + "a" * 33])
def test_malformed_keys_are_refused_before_lookup(text: str) -> None:
    assert not keys.looks_like_key(text)


def test_create_stores_only_hash_and_prefix(session) -> None:
    key, plaintext = keys.create_key(session, "  alice  ")
    row = session.get(ApiKey, key.id)
    assert row.name == "alice"
    assert row.key_hash == keys.hash_key(plaintext)
    assert row.prefix == plaintext[: keys.DISPLAY_PREFIX_LEN]
    assert plaintext not in (row.key_hash, row.prefix, row.name)


def test_find_key_matches_only_the_exact_plaintext(session) -> None:
    key, plaintext = keys.create_key(session, "bob")
    assert keys.find_key(session, plaintext).id == key.id
    assert keys.find_key(session, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert keys.find_key(session, "garbage") is None


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_create_rejects_bad_names(session, name: str) -> None:
    with pytest.raises(ValueError):
        keys.create_key(session, name)


def test_revoke_by_id_and_prefix_is_idempotent(session) -> None:
    first, _ = keys.create_key(session, "one")
    second, _ = keys.create_key(session, "two")
    revoked = keys.revoke_key(session, first.id)
    assert revoked.revoked_at is not None
    when = revoked.revoked_at
    assert keys.revoke_key(session, str(first.id)).revoked_at == when
    assert keys.revoke_key(session, second.prefix).id == second.id


def test_revoke_refuses_unknown_and_ambiguous(session) -> None:
    keys.create_key(session, "one")
    keys.create_key(session, "two")
    with pytest.raises(keys.KeyLookupError, match="no API key"):
        keys.revoke_key(session, "999")
    with pytest.raises(keys.KeyLookupError, match="use the id"):
        keys.revoke_key(session, "vaas_")


# ------------------------------------------------------------------------------ limits
def test_set_limits_sets_resets_and_leaves_alone(session) -> None:
    key, _ = keys.create_key(session, "limited")
    keys.set_limits(session, key.id, jobs_per_minute=5, active_jobs=2)
    keys.set_limits(session, key.prefix, total_queries=1_000, active_jobs=None)
    row = session.get(ApiKey, key.id)
    assert (row.max_jobs_per_minute, row.max_active_jobs, row.max_total_queries) == (5, 2, 1_000)
    keys.set_limits(session, key.id, jobs_per_minute=0)
    assert (row.max_jobs_per_minute, row.max_active_jobs) == (None, 2)


@pytest.mark.parametrize(("limits", "words"), [
    ({"active_jobs": -1}, "positive number, or 0"),
    ({"per_hour": 3}, "unknown limit"),
])
def test_set_limits_refuses_nonsense(session, limits: dict, words: str) -> None:
    key, _ = keys.create_key(session, "k")
    with pytest.raises(ValueError, match=words):
        keys.set_limits(session, key.id, **limits)


def test_effective_limits_say_which_are_the_keys_own() -> None:
    settings = Settings(key_jobs_per_minute=60, key_active_jobs=50, key_total_queries=1_000_000)
    key = ApiKey(name="k", prefix="vaas_x", key_hash="h", max_active_jobs=3)
    limits = KeyLimits.of(key, settings)
    assert (limits.jobs_per_minute, limits.active_jobs, limits.total_queries) == (60, 3, 1_000_000)
    assert limits.describe() == "60 jobs/min (default), 3 active (own), 1,000,000 queries (default)"


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch) -> Iterator[None]:
    """The CLI reads VAAS_DATABASE_URL like the services: point it at a throwaway SQLite file."""
    monkeypatch.setenv("VAAS_DATABASE_URL", f"sqlite:///{tmp_path / 'keys.db'}")
    monkeypatch.setenv("VAAS_KEY_ACTIVE_JOBS", "7")
    monkeypatch.setenv("VAAS_KEY_JOBS_PER_MINUTE", "60")
    caches = (get_settings, db_session.get_engine, db_session._factory)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def test_cli_sets_shows_and_resets_limits(cli_database, capsys) -> None:
    assert keys.main(["create", "ops"]) == 0
    capsys.readouterr()
    with db_session.session_scope() as session:
        prefix = session.scalars(select(ApiKey.prefix)).one()

    assert keys.main(["limits", prefix, "--jobs-per-minute", "10", "--total-queries", "5000"]) == 0
    line = capsys.readouterr().out
    assert "10 jobs/min (own), 7 active (default), 5,000 queries (own)" in line and prefix in line

    assert keys.main(["limits", "1", "--jobs-per-minute", "0"]) == 0
    assert "60 jobs/min (default)" in capsys.readouterr().out
    assert keys.main(["limits", "1"]) == 0  # no option: show them
    assert "5,000 queries (own)" in capsys.readouterr().out
    assert keys.main(["list"]) == 0
    assert "60 jobs/min (default), 7 active (default), 5,000 queries (own)" in capsys.readouterr().out
    with db_session.session_scope() as session:
        key = session.get(ApiKey, 1)
        assert (key.max_jobs_per_minute, key.max_active_jobs, key.max_total_queries) == (None, None, 5000)


def test_cli_limit_errors_say_what_is_wrong(cli_database, capsys) -> None:
    assert keys.main(["limits", "42", "--active-jobs", "3"]) == 1
    assert "no API key with id 42" in capsys.readouterr().err
    keys.main(["create", "ops"])
    capsys.readouterr()
    assert keys.main(["limits", "1", "--active-jobs", "-2"]) == 1
    assert "positive number, or 0" in capsys.readouterr().err
