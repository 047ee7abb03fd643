"""Resume and fork at task boundaries: runs.parent_id, fork_task, resume_task, checkpoint_task, resumes.

- ``parent_id`` and ``fork_task``: a fork's parent run and the task after which it branched (its rows up to that
  task's end are copies of the parent's).
- ``resume_task``: set while a run waits to continue from its checkpoint after that task (0: from the start).
- ``checkpoint_task``: the last task whose end the run checkpointed (None: none yet, or checkpoints off).
- ``resumes``: how many times the run was resumed (automatic resume gives up after a few).

All nullable: older runs have none of them.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("parent_id", "fork_task", "resume_task", "checkpoint_task", "resumes")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("runs", sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        for name in reversed(COLUMNS):
            batch.drop_column(name)
