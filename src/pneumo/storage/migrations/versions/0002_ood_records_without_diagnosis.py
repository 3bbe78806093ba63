"""A record of a film flagged out of distribution stores no class and no probability.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.alter_column("prediction", existing_type=sa.String(32), nullable=True)
        batch.alter_column("probability", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    undiagnosed = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM records WHERE prediction IS NULL OR probability IS NULL")
    )
    if undiagnosed.scalar():  # the old schema cannot hold them, and records are not deleted
        raise RuntimeError("records of films not assessed exist: the old schema cannot hold them")
    with op.batch_alter_table("records") as batch:
        batch.alter_column("prediction", existing_type=sa.String(32), nullable=False)
        batch.alter_column("probability", existing_type=sa.Float(), nullable=False)
