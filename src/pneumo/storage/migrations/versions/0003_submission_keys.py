"""Records and audit rows delivered from the app's outbox carry a unique key, so a delivery
retried after a crash finds what it already stored instead of storing it twice.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("records", "audit")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("submission_key", sa.String(64), nullable=True))
            batch.create_index(f"ix_{table}_submission_key", ["submission_key"], unique=True)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_submission_key")
            batch.drop_column("submission_key")
