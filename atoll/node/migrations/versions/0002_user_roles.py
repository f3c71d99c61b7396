"""users get a role: admin (everything) or viewer (reads only; cannot approve, submit, grant)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 02:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # every user made before roles existed could do everything: they stay admins
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('role', sa.String(length=16), nullable=False, server_default='admin'))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('role')
