"""campaigns: many clips × attacks × one model, fanned out into jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 11:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("goal", sa.String(length=16), nullable=False),
        sa.Column("target_rule", sa.JSON(), nullable=False),
        sa.Column("max_queries", sa.Integer(), nullable=False),
        sa.Column("attacks", sa.JSON(), nullable=False),
        sa.Column("clips", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaigns_api_key_id"), ["api_key_id"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("clip_index", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_foreign_key("fk_jobs_campaign_id", "campaigns", ["campaign_id"], ["id"],
                                    ondelete="CASCADE")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_campaign_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_campaign_id"))
        batch_op.drop_column("clip_index")
        batch_op.drop_column("campaign_id")
    op.drop_table("campaigns")
