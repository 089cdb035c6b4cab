"""Who the models fail: the table ``image_attribute`` (each image's gender and race labels, keyed by
dataset and content id, and where each was read), and the ``--max-group-gap`` constraint: its limit and
groups on ``study`` (``max_group_gap``, ``group_gap_by``) and each trial's validation gap on ``trial``
(``eval_group_gap``). Existing studies and trials keep NULL (no gap constraint).

Revision ID: 4a96ff4d5571
Revises: d21cb2dc4ab5
Create Date: 2026-12-06 21:05:21.014386

Frozen: imports nothing from ab.nn (which changes after this file is written); a data migration
copies what it needs. Reviewed as docs/guide/schema-upgrades.md says.
"""
from alembic import op
import sqlalchemy as sa

revision = '4a96ff4d5571'
down_revision = 'd21cb2dc4ab5'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('image_attribute',
    sa.Column('dataset', sa.Text(), nullable=False),
    sa.Column('image_id', sa.Text(), nullable=False),
    sa.Column('age', sa.Float(), nullable=True),
    sa.Column('gender', sa.String(length=16), nullable=False),
    sa.Column('race', sa.String(length=16), nullable=False),
    sa.Column('age_from', sa.Text(), nullable=True),
    sa.Column('gender_from', sa.Text(), nullable=True),
    sa.Column('race_from', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('dataset', 'image_id')
    )
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_group_gap', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('group_gap_by', sa.Text(), nullable=True))

    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eval_group_gap', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.drop_column('eval_group_gap')

    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.drop_column('group_gap_by')
        batch_op.drop_column('max_group_gap')

    op.drop_table('image_attribute')
