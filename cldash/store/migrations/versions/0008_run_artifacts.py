"""runs.artifacts: where a run's checkpoints and saved adapters are kept (cldash.store.artifacts), when not in the
store's default place: a folder or an fsspec URL (s3://bucket/prefix), so any machine finds them.

Nullable: NULL is the default place (next to a SQLite file), as for every run stored before this revision.

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
    op.add_column("runs", sa.Column("artifacts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        batch.drop_column("artifacts")
