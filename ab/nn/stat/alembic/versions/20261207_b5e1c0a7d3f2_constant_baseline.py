"""The constant-predictor baseline of each data key: the table ``constant_baseline`` (the training part's
mean age, and the MAE of predicting it for every image on the eval and test parts). Existing data keys
get their row when a runner next runs on them.

Revision ID: b5e1c0a7d3f2
Revises: 14679d85f86c
Create Date: 2026-12-07 00:20:00

Frozen: imports nothing from ab.nn (which changes after this file is written). Reviewed as
docs/guide/schema-upgrades.md says.
"""
from alembic import op
import sqlalchemy as sa

revision = 'b5e1c0a7d3f2'
down_revision = '14679d85f86c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('constant_baseline',
    sa.Column('data_key', sa.Text(), nullable=False),
    sa.Column('dataset', sa.Text(), nullable=False),
    sa.Column('train_mean', sa.Float(), nullable=False),
    sa.Column('n_train', sa.Integer(), nullable=False),
    sa.Column('eval_mae', sa.Float(), nullable=True),
    sa.Column('n_eval', sa.Integer(), nullable=False),
    sa.Column('test_mae', sa.Float(), nullable=True),
    sa.Column('n_test', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('data_key')
    )


def downgrade() -> None:
    op.drop_table('constant_baseline')
