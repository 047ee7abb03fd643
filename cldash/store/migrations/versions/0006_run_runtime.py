"""runs.runtime: what a run actually used (JSON): the precision (and the one asked for, with why, where it fell
back), whether the model was compiled (and why not), the anytime evaluations' subset size, and the stream's
data provenance (source, revision, split file and its sha256).

Nullable: the runs stored before this revision did not record it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("runtime", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        batch.drop_column("runtime")
