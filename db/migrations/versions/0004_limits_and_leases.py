"""per-key limits; job leases (one runner at a time) and the sweeper's re-publish time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 13:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_jobs_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_active_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_total_queries",
                                      sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("requeued_at")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_total_queries")
        batch_op.drop_column("max_active_jobs")
        batch_op.drop_column("max_jobs_per_minute")
