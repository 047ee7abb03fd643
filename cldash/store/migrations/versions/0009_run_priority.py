"""runs.priority: the order the local queue starts waiting runs in (cldash.runs.priority): 0 interactive (a lesson,
the demo, the Launch page, a re-run), 1 batch (the claims' runs, sweeps, tuning trials). Waiting runs start by
(priority, id), so a lesson launched behind an hour of claim runs starts at the next free slot.

NULL reads as interactive. The runs queued before this revision that belong to a batch group (the claims, a sweep,
a search) are marked batch here, so an upgrade does not let an old batch wait in front of a new lesson.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 1


def upgrade() -> None:
    op.add_column("runs", sa.Column("priority", sa.Integer(), nullable=True))
    runs = sa.table("runs", sa.column("priority", sa.Integer()), sa.column("group_key", sa.String()))
    op.execute(runs.update().where(sa.or_(runs.c.group_key == "claims", runs.c.group_key.like("sweep:%"),
                                          runs.c.group_key.like("tune:%"))).values(priority=BATCH))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:   # SQLite rebuilds the table where it cannot drop a column
        batch.drop_column("priority")
