"""Indexes for the sweep's lookups, and the foreign key that 0002 left off notifications.

The sweep looks for orders whose note or store action is still open; without these indexes
each sweep read every order ever received. ``notifications.order_id`` was added in 0002 without
the ``orders`` foreign key the models declare; rows pointing at no order are unlinked first.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_note", "orders", ["note_state", "next_attempt_at"])
    op.create_index("ix_store_actions_open", "store_actions", ["state", "order_id"])
    op.execute(sa.text("UPDATE notifications SET order_id = NULL WHERE order_id IS NOT NULL"
                       " AND order_id NOT IN (SELECT id FROM orders)"))
    with op.batch_alter_table("notifications") as batch:
        batch.create_foreign_key("fk_notifications_order", "orders", ["order_id"], ["id"],
                                 ondelete="CASCADE")


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("fk_notifications_order", type_="foreignkey")
    op.drop_index("ix_store_actions_open", "store_actions")
    op.drop_index("ix_orders_note", "orders")
