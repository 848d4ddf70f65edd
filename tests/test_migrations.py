"""The Alembic migrations build exactly the schema the SQLAlchemy models declare, on Postgres and SQLite."""
from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from db.migrate import upgrade
from db.models import Base

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _schema_drift(url: str) -> list:
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_sqlite_migrations_match_the_models(tmp_path):
    assert _schema_drift(f"sqlite:///{tmp_path / 'vaas.db'}") == []


def test_postgres_migrations_match_the_models():
    name = f"vaas_migrations_{uuid.uuid4().hex[:8]}"
    try:
        drift = _schema_drift(POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}")
    finally:
        admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    assert drift == []
