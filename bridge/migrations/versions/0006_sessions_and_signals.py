"""Session versions for sign-out, merged status checks per order, signals by order.

``merchants.session_version`` is raised by "sign out" so that a copied session cookie stops
working. ``orders.signal_check_at`` holds when the status check queued by a notification or a
return runs: later signals merge into it. ``ix_notifications_order`` serves reconcile, which
reads an order's notifications for the track ids of attempts UPay never gave an invoice id for.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("session_version", sa.Integer, nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("signal_check_at", sa.Float, nullable=True))
    op.create_index("ix_notifications_order", "notifications", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_order", "notifications")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("signal_check_at")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("session_version")
