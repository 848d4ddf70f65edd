"""API keys: created, looked up, limited and revoked here; the CLI is
`python -m api.keys create|revoke|limits|list`.

A key is `vaas_` + 32 URL-safe characters (192 random bits). Only its SHA-256 is stored: a leaked
database does not leak usable keys, and a plain (unsalted) hash is enough because the key itself is
high-entropy — there is nothing to brute-force. A short prefix is kept in clear so operators can tell
keys apart in listings and revoke one without ever seeing it again.

Each key may have its own limits (jobs per minute, active jobs, lifetime queries; api/limits.py); a
key without its own uses the server's defaults (VAAS_KEY_JOBS_PER_MINUTE, VAAS_KEY_ACTIVE_JOBS,
VAAS_KEY_TOTAL_QUERIES).
"""
from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.limits import KeyLimits
from core.settings import Settings
from db.models import ApiKey

KEY_PREFIX = "vaas_"
RANDOM_BYTES = 24  # 24 bytes -> 32 URL-safe base64 characters
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 7  # e.g. "vaas_Ab3dE5g": enough to tell keys apart
MAX_NAME_LEN = 200


class KeyLookupError(LookupError):
    """No key, or more than one, matches what an operator typed."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(RANDOM_BYTES)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def display_prefix(plaintext: str) -> str:
    return plaintext[:DISPLAY_PREFIX_LEN]


def looks_like_key(plaintext: str) -> bool:
    """Cheap shape check so obvious garbage never reaches the database."""
    return plaintext.startswith(KEY_PREFIX) and len(plaintext) == len(KEY_PREFIX) + 32


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext, which is never available again."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LEN:
        raise ValueError(f"a key name must be 1 to {MAX_NAME_LEN} characters")
    plaintext = generate_key()
    key = ApiKey(name=name, prefix=display_prefix(plaintext), key_hash=hash_key(plaintext))
    session.add(key)
    session.commit()
    return key, plaintext


def find_key(session: Session, plaintext: str) -> ApiKey | None:
    """The key with this plaintext, revoked or not (callers decide what revocation means)."""
    if not looks_like_key(plaintext):
        return None
    # Lookup by hash: equality on a digest of a secret leaks nothing useful through timing.
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))


def resolve_key(session: Session, prefix_or_id: str) -> ApiKey:
    """A key by numeric id or by (a unique start of) its display prefix."""
    if prefix_or_id.isdigit():
        key = session.get(ApiKey, int(prefix_or_id))
        if key is None:
            raise KeyLookupError(f"no API key with id {prefix_or_id}")
        return key
    matches = session.scalars(select(ApiKey).where(ApiKey.prefix.startswith(prefix_or_id))).all()
    if not matches:
        raise KeyLookupError(f"no API key whose prefix starts with {prefix_or_id!r}")
    if len(matches) > 1:
        ids = ", ".join(str(k.id) for k in matches)
        raise KeyLookupError(f"{len(matches)} keys start with {prefix_or_id!r} (ids {ids}); use the id")
    return matches[0]


def revoke_key(session: Session, prefix_or_id: str | int) -> ApiKey:
    """Revoke a key (idempotent: an already revoked key keeps its first revocation time)."""
    key = resolve_key(session, str(prefix_or_id))
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        session.commit()
    return key


# The limit columns of ApiKey, by the CLI option that sets them.
LIMIT_COLUMNS = {
    "jobs_per_minute": "max_jobs_per_minute",
    "active_jobs": "max_active_jobs",
    "total_queries": "max_total_queries",
}


def set_limits(session: Session, prefix_or_id: str | int, **limits: int | None) -> ApiKey:
    """Set a key's own limits: a positive value is the key's limit, 0 returns it to the server's
    default, None (or a limit not named) leaves it as it is."""
    unknown = sorted(set(limits) - set(LIMIT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown limit(s) {', '.join(unknown)}; the limits are {', '.join(LIMIT_COLUMNS)}")
    for name, value in limits.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be a positive number, or 0 for the server's default; got {value}")
    key = resolve_key(session, str(prefix_or_id))
    for name, value in limits.items():
        if value is not None:
            setattr(key, LIMIT_COLUMNS[name], value or None)
    session.commit()
    return key


# ------------------------------------------------------------------------------------------ CLI
def _format(key: ApiKey, settings: Settings) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    limits = KeyLimits.of(key, settings).describe()
    return f"{key.id:>5}  {key.prefix:<14}  {state:<24}  {limits}  {key.name}"


def _limit_options(parser: argparse.ArgumentParser) -> None:
    for name in LIMIT_COLUMNS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, metavar="N",
                            help=f"this key's {name.replace('_', ' ')} limit (0 = the server's default)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.keys", description="Manage VAAS API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="create a key and print it once").add_argument("name")
    commands.add_parser("revoke", help="revoke a key").add_argument("prefix_or_id")
    limits = commands.add_parser(
        "limits", help="show or set a key's limits (jobs per minute, active jobs, total queries)",
        description="Without options, show the key's limits. Each option sets one; 0 returns it to the "
                    "server's default.")
    limits.add_argument("prefix_or_id")
    _limit_options(limits)
    commands.add_parser("list", help="list keys (prefixes only) and their limits")
    args = parser.parse_args(argv)

    from core.settings import get_settings
    from db.migrate import upgrade
    from db.session import new_session

    settings = get_settings()
    upgrade()  # the CLI may be the first thing run against a fresh database
    with new_session() as session:
        try:
            if args.command == "create":
                key, plaintext = create_key(session, args.name)
                print(f"created key {key.id} ({key.prefix}…) for {key.name!r}; it is shown only once:",
                      file=sys.stderr)
                print(plaintext)
            elif args.command == "revoke":
                print(_format(revoke_key(session, args.prefix_or_id), settings))
            elif args.command == "limits":
                chosen = {name: getattr(args, name) for name in LIMIT_COLUMNS}
                print(_format(set_limits(session, args.prefix_or_id, **chosen), settings))
            else:
                for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
                    print(_format(key, settings))
        except (KeyLookupError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
