"""Payment confirmation: payments, store actions, the status-call rate limiter.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("payment_state", sa.String(12), nullable=False,
                                   server_default="open"))
        batch.add_column(sa.Column("paid_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("returned_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("next_check_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("check_count", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("token", sa.String(32), nullable=True))
        batch.create_unique_constraint("uq_attempts_token", ["token"])
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("order_id", sa.Integer, nullable=True))
    op.create_table(
        "payments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id", ondelete="CASCADE"),
                  nullable=True),
        sa.Column("track_id", sa.String(64), nullable=False, unique=True),
        sa.Column("payment_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("result", sa.String(30), nullable=False),
        sa.Column("amount", sa.String(40), nullable=False, server_default=""),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("payment_type", sa.String(30), nullable=False, server_default=""),
        sa.Column("upay_order_id", sa.String(40), nullable=False, server_default=""),
        sa.Column("source", sa.String(12), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "store_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.Column("state", sa.String(10), nullable=False, server_default="pending"),
        sa.Column("result", sa.Text, nullable=False, server_default=""),
        sa.Column("dedupe_key", sa.String(120), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_store_actions_order", "store_actions", ["order_id", "state"])
    op.create_table(
        "rate_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_rate_events_key_at", "rate_events", ["key", "at"])
    op.create_index("ix_orders_payment", "orders", ["payment_state", "next_check_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_payment", "orders")
    op.drop_table("rate_events")
    op.drop_table("store_actions")
    op.drop_table("payments")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("order_id")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_constraint("uq_attempts_token", type_="unique")
        batch.drop_column("token")
    with op.batch_alter_table("orders") as batch:
        for column in ("check_count", "next_check_at", "returned_at", "paid_at", "payment_state"):
            batch.drop_column(column)
