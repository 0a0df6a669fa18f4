"""Requests keep the days asked and the rule's maximum (the approvals inbox shows both).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: requests made before this revision kept only the capped days
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("asked_days", sa.Float, nullable=True))
        batch.add_column(sa.Column("max_days", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("max_days")
        batch.drop_column("asked_days")
