"""One record of truth: our ``study`` table (what each study optimises, from which its Optuna copy is
rebuilt), the ``outbox`` of work that follows a commit (the JSON mirror), each trial's sampled values
with their distributions (``trial.search_params``), and the request keys that make retried inserts of
artifacts and latencies add one row (``export.key``, ``latency.key``). Existing rows keep NULL keys.

Revision ID: d21cb2dc4ab5
Revises: 7f50c18d4e82
Create Date: 2026-12-06 19:23:09.790093

Frozen: imports nothing from ab.nn (which changes after this file is written); a data migration
copies what it needs. Reviewed as docs/guide/schema-upgrades.md says.
"""
from alembic import op
import sqlalchemy as sa

revision = 'd21cb2dc4ab5'
down_revision = '7f50c18d4e82'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('host', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending', ['done_at', 'host'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_trial_id'), ['trial_id'], unique=False)

    op.create_table('study',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('config', sa.Text(), nullable=False),
    sa.Column('data_key', sa.Text(), nullable=True),
    sa.Column('epoch_max', sa.Integer(), nullable=True),
    sa.Column('objectives', sa.Text(), nullable=False),
    sa.Column('max_latency_ms', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_config'), ['config'], unique=False)

    with op.batch_alter_table('export', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_export_key'), ['key'], unique=True)

    with op.batch_alter_table('latency', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_latency_key'), ['key'], unique=True)

    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_params', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.drop_column('search_params')

    with op.batch_alter_table('latency', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_latency_key'))
        batch_op.drop_column('key')

    with op.batch_alter_table('export', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_export_key'))
        batch_op.drop_column('key')

    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_config'))

    op.drop_table('study')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_trial_id'))
        batch_op.drop_index('ix_outbox_pending')

    op.drop_table('outbox')
