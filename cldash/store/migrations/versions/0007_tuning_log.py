"""tuning_log: Optuna's journal of the tuning searches (cldash.analysis.tuning), one JSON operation per row.

A new table, so the runs stored before this revision are untouched. Optuna's own RDB storage could not share
the store's database: it keeps its Alembic revision in the same default ``alembic_version`` table as the
store, and each would read the other's revision as its own.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("tuning_log", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("log", sa.Text(), nullable=False))


def downgrade() -> None:
    op.drop_table("tuning_log")
