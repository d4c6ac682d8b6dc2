"""The customer's browser (Plural's create-payment device_info), sent with the payment when given

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_info', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.drop_column('device_info')
