"""Webhook health and catch-up state per store.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_health",
        sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("webhook_ids", sa.Text, nullable=False, server_default="[]"),
        sa.Column("webhook_status", sa.String(20), nullable=False, server_default=""),
        sa.Column("last_check_at", sa.Float, nullable=True),
        sa.Column("last_failure_at", sa.Float, nullable=True),
        sa.Column("last_failure", sa.Text, nullable=False, server_default=""),
        sa.Column("last_catch_up_at", sa.Float, nullable=True),
        sa.Column("reactivations", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("store_health")
