"""How each trial's code ran (``trial.sandbox``: ``bubblewrap``, or ``none: ...`` and why). Existing rows
keep NULL: they ran before the sandbox, unconfined.

Revision ID: 14679d85f86c
Revises: 4a96ff4d5571
Create Date: 2026-12-06 21:04:06.639666

Frozen: imports nothing from ab.nn (which changes after this file is written); a data migration
copies what it needs. Reviewed as docs/guide/schema-upgrades.md says.
"""
from alembic import op
import sqlalchemy as sa

revision = '14679d85f86c'
down_revision = '4a96ff4d5571'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sandbox', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.drop_column('sandbox')
