"""Session versions for the Saleor Dashboard's sessions, per store.

A session opened from inside the Saleor Dashboard (the app page, by the Dashboard's token) has
no merchant account, so ``merchants.session_version`` cannot end it. It carries its store's
version from ``dashboard_sessions`` instead: signing out from a Dashboard session, and a
reinstall of the app, raise it, and every Dashboard session of that store stops working. No row
is version 0; the row goes with its store.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("dashboard_sessions")
