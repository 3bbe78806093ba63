"""Clinicians' reviews of records (added, never updated), films kept in the database when the
film store is the database, and the heatmap of each record.

Revision ID: 0004
Revises: 0003
Create Date: 2027-02-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("record_id", sa.Integer(), sa.ForeignKey("records.id"), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewer", sa.String(120), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("agrees", sa.Boolean(), nullable=False),
        sa.Column("finding", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("amends_id", sa.Integer(), sa.ForeignKey("reviews.id"), nullable=True),
    )
    op.create_index("ix_reviews_record_id", "reviews", ["record_id"])
    op.create_index("ix_reviews_created", "reviews", ["created"])
    op.create_table(
        "films",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("heatmap_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("heatmap_sha256")
    op.drop_table("films")
    op.drop_table("reviews")
