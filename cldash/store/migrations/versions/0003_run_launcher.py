"""runs.launcher: what started a run. "cli" for a foreground `cldash run` (its own process executes
it; the scheduler never starts it), "local" for a run queued for the local background launcher.

Nullable: the runs stored before this revision did not record it (they read as "local").

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("launcher", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        batch.drop_column("launcher")
