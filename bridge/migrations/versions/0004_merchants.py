"""Merchant accounts for the settings page, store ownership, app installs in progress.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("language", sa.String(2), nullable=False, server_default="en"),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "installs",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("merchant_id", sa.Integer, sa.ForeignKey("merchants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("store_url", sa.String(500), nullable=False),
        sa.Column("store_id", sa.String(16), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("stores") as batch:
        batch.add_column(sa.Column("merchant_id", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.drop_column("merchant_id")
    op.drop_table("installs")
    op.drop_table("merchants")
