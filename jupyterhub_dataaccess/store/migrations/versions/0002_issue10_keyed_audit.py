"""Issue 10: the audit head names the key of the chain; grants remember their classification; one
pending request per user and dataset.

- `audit_head.key_id`: the public id of the audit key the chain is keyed with (NULL: plain).
  The head row is made here for an empty log, so a missing head is always tampering.
- `grants.classification`: the dataset's classification when granted, so a grant never outlives
  an upward reclassification (NULL for older grants: they keep working until they end).
- A unique index on (user, dataset) over pending requests: two requests sent at the same
  instant on PostgreSQL can no longer both be pending. Older duplicates (only the race could
  make them) are closed as withdrawn, keeping the first.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("key_id", sa.String(16), nullable=True))
    op.execute(
        "INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, '" + "0" * 64 + "' "
        "WHERE NOT EXISTS (SELECT 1 FROM audit_head) AND NOT EXISTS (SELECT 1 FROM audit)")
    op.execute(
        "UPDATE requests SET status = 'withdrawn', "
        "reason = 'closed by the upgrade: a duplicate of an earlier pending request' "
        "WHERE status = 'pending' AND id NOT IN (SELECT first FROM (SELECT MIN(id) AS first "
        "FROM requests WHERE status = 'pending' GROUP BY \"user\", dataset) AS firsts)")
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("classification", sa.String(16), nullable=True))
    op.create_index("uq_requests_pending", "requests", ["user", "dataset"], unique=True,
                    sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index("uq_requests_pending", table_name="requests")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("classification")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("key_id")
