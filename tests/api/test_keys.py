from __future__ import annotations

import hashlib

import pytest

from api import keys
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
