"""Checkouts accepted while Redis is away: the card sealed (encrypted) in the row until the first step

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed_card', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.drop_column('sealed_card')
