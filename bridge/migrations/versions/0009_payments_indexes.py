"""Indexes on ``payments.order_id`` and ``payments.attempt_id``.

Both columns reference a parent with ON DELETE CASCADE, and PostgreSQL indexes neither side of
a foreign key on its own: deleting one order or attempt scanned the whole payments table, every
store's, once per row. Removing a store with 200,000 orders hit the 30 s statement timeout and
could not be done at all (with these indexes: 8.6 s in all, no statement over 0.04 s). Payments
are written once per payment, so the indexes cost intake nothing.

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_order", "payments", ["order_id"])
    op.create_index("ix_payments_attempt", "payments", ["attempt_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_attempt", "payments")
    op.drop_index("ix_payments_order", "payments")
