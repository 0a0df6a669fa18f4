"""Deliveries: the webhook's place in the audit log, shared by every replica (issue 15).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from jupyterhub_dataaccess.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("retry_at", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("deliveries")
