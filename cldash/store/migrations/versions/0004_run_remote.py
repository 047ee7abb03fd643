"""Runs on other hosts: runs.cancel_requested_at and runs.launcher_info.

- ``cancel_requested_at``: when a cancel was asked for. A run polls it at each of its flushes and stops
  as cancelled, so a cancel reaches a run on any host that can reach the store, whatever launched it.
- ``launcher_info``: JSON, what the run's launcher needs to find it again from any process: for the Ray
  launcher the cluster's address, the job's submission id and the resources the run asked for.

Both nullable: older runs asked for neither.

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
    op.add_column("runs", sa.Column("cancel_requested_at", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("launcher_info", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        batch.drop_column("launcher_info")
        batch.drop_column("cancel_requested_at")
