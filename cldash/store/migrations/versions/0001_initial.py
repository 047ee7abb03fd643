"""The run store as cldash 0.1.0 made it before migrations: runs, tasks, modules, evaluations,
scalars, spectra, orders and meta.

Written out column by column (not `metadata.create_all` of the live models, which move on).
A store made before migrations is this revision; it gets no `alembic_version` table until it
is upgraded, and one made before the `orders` table existed lacks only that table, so this
revision creates the tables a store does not have yet and leaves the others as they are.

Revision ID: 0001
Revises: none
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _run_id() -> sa.Column:
    return sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "runs" not in existing:
        op.create_table(
            "runs",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("launch_key", sa.String(80), nullable=True),
            sa.Column("group_key", sa.String(80), nullable=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("method", sa.String(64), nullable=False),
            sa.Column("stream", sa.String(500), nullable=False),
            sa.Column("backbone", sa.String(500), nullable=False),
            sa.Column("policy", sa.String(16), nullable=True),
            sa.Column("seed", sa.Integer(), nullable=False),
            sa.Column("config", sa.Text(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("progress", sa.Float(), nullable=False),
            sa.Column("step", sa.Integer(), nullable=False),
            sa.Column("total_steps", sa.Integer(), nullable=False),
            sa.Column("task", sa.Integer(), nullable=False),
            sa.Column("num_tasks", sa.Integer(), nullable=False),
            sa.Column("primary_metric", sa.String(64), nullable=False),
            sa.Column("pid", sa.Integer(), nullable=True),
            sa.Column("host", sa.String(200), nullable=True),
            sa.Column("device", sa.String(64), nullable=True),
            sa.Column("versions", sa.Text(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("summary", sa.Text(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=True),
            sa.Column("heartbeat_at", sa.Float(), nullable=True),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("launch_key"),
        )
        op.create_index("ix_runs_group_key", "runs", ["group_key"])
        op.create_index("ix_runs_status", "runs", ["status"])
    if "orders" not in existing:
        op.create_table(
            "orders",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("stream", sa.String(500), nullable=False),
            sa.Column("backbone", sa.String(500), nullable=False),
            sa.Column("config", sa.Text(), nullable=False),
            sa.Column("tasks", sa.Text(), nullable=False),
            sa.Column("matrix", sa.Text(), nullable=False),
            sa.Column("order", sa.Text(), nullable=False),
            sa.Column("cost", sa.Float(), nullable=False),
            sa.Column("natural_cost", sa.Float(), nullable=False),
            sa.Column("ordered_options", sa.Text(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "meta" not in existing:
        op.create_table(
            "meta",
            sa.Column("key", sa.String(64), nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )
    if "tasks" not in existing:
        op.create_table(
            "tasks",
            _run_id(),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("n_train", sa.Integer(), nullable=False),
            sa.Column("n_test", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("run_id", "position"),
        )
    if "modules" not in existing:
        op.create_table(
            "modules",
            _run_id(),
            sa.Column("name", sa.String(300), nullable=False),
            sa.Column("layer", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(100), nullable=False),
            sa.Column("out_features", sa.Integer(), nullable=False),
            sa.Column("in_features", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("run_id", "name"),
        )
    if "evaluations" not in existing:
        op.create_table(
            "evaluations",
            sa.Column("id", sa.Integer(), nullable=False),
            _run_id(),
            sa.Column("step", sa.Integer(), nullable=False),
            sa.Column("trained_through", sa.Integer(), nullable=False),
            sa.Column("task", sa.Integer(), nullable=False),
            sa.Column("metric", sa.String(64), nullable=False),
            sa.Column("value", sa.Float(), nullable=False),
            sa.Column("final", sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_evaluations_run_step", "evaluations", ["run_id", "step"])
    if "scalars" not in existing:
        op.create_table(
            "scalars",
            sa.Column("id", sa.Integer(), nullable=False),
            _run_id(),
            sa.Column("step", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("module", sa.String(300), nullable=False),
            sa.Column("value", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_scalars_run_name_step", "scalars", ["run_id", "name", "step"])
    if "spectra" not in existing:
        op.create_table(
            "spectra",
            sa.Column("id", sa.Integer(), nullable=False),
            _run_id(),
            sa.Column("step", sa.Integer(), nullable=False),
            sa.Column("task", sa.Integer(), nullable=False),
            sa.Column("module", sa.String(300), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("values", sa.LargeBinary(), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
            sa.Column("numerical_rank", sa.Integer(), nullable=False),
            sa.Column("erank", sa.Float(), nullable=True),
            sa.Column("stable_rank", sa.Float(), nullable=True),
            sa.Column("top1_energy", sa.Float(), nullable=True),
            sa.Column("condition", sa.Float(), nullable=True),
            sa.Column("frobenius", sa.Float(), nullable=False),
            sa.Column("entropy", sa.Float(), nullable=True),
            sa.Column("w0_energy", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_spectra_run_module_kind_step", "spectra", ["run_id", "module", "kind", "step"])
        op.create_index("ix_spectra_run_step", "spectra", ["run_id", "step"])


def downgrade() -> None:
    for table in ("spectra", "scalars", "evaluations", "modules", "tasks", "meta", "orders", "runs"):
        op.drop_table(table)
