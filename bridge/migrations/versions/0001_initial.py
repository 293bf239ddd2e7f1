"""Stores, orders, invoice attempts, deliveries, notifications and order events.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stores",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("upay_sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("settings", sa.Text, nullable=False, server_default="{}"),
        sa.Column("secrets", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("external_id", sa.String(100), nullable=False),
        sa.Column("number", sa.String(100), nullable=False, server_default=""),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("total", sa.String(40), nullable=False, server_default="0"),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("invoice_id", sa.String(100), nullable=True),
        sa.Column("invoice_url", sa.String(500), nullable=True),
        sa.Column("upay_order_id", sa.String(40), nullable=True),
        sa.Column("meta_written", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("note_state", sa.String(10), nullable=False, server_default="none"),
        sa.Column("note_text", sa.Text, nullable=False, server_default=""),
        sa.Column("note_customer", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("note_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("store_id", "external_id", name="uq_orders_store_external"),
    )
    op.create_index("ix_orders_work", "orders", ["state", "next_attempt_at"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("upay_order_id", sa.String(40), nullable=False, unique=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("invoice_id", sa.String(100), nullable=True),
        sa.Column("invoice_url", sa.String(500), nullable=True),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("order_id", "number", name="uq_attempts_order_number"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("topic", sa.String(60), nullable=False, server_default=""),
        sa.Column("delivery_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("external_order_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("state", sa.String(12), nullable=False, server_default="received"),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_events_order", "events", ["order_id"])


def downgrade() -> None:
    for table in ("events", "notifications", "deliveries", "attempts", "orders", "stores"):
        op.drop_table(table)
