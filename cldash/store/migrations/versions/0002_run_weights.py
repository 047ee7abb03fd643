"""runs.weights: which backbone weights a run used (JSON: shipped, or pre-trained locally and how).

Nullable: the runs stored before this revision did not record it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("weights", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        batch.drop_column("weights")
