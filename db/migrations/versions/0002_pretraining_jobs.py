"""pre-training jobs: a job kind, and no clip for jobs that attack none

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NULLABLE_FOR_PRETRAINING = {
    "source_label": sa.Integer(),
    "source_label_name": sa.String(length=200),
    "source_probability": sa.Float(),
    "input_filename": sa.String(length=255),
    "input_sha256": sa.String(length=64),
}


def upgrade() -> None:
    # batch mode: SQLite (the embedded mode) cannot ALTER a column's nullability in place
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="attack"))
        for column, type_ in NULLABLE_FOR_PRETRAINING.items():
            batch_op.alter_column(column, existing_type=type_, nullable=True)
        batch_op.create_index("ix_jobs_owner_kind_model", ["api_key_id", "kind", "model"], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'pretrain'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_kind_model")
        for column, type_ in NULLABLE_FOR_PRETRAINING.items():
            batch_op.alter_column(column, existing_type=type_, nullable=False)
        batch_op.drop_column("kind")
