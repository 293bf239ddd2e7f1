"""When the return page's next follow-up check is due.

``orders.follow_up_at`` holds when the next check of the chain of follow-ups for a customer
waiting on the return page runs: a return while one is due later starts no second chain.
Nullable, no index (read and written by the order's id only); existing rows start with none.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("follow_up_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("follow_up_at")
