"""EMI checkouts: the customer's choice, the offer as Plural discovered it, the payment amount

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.add_column(sa.Column('emi_choice', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('offer', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('payment_amount', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('cart_coupon_discount', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        for name in ('cart_coupon_discount', 'payment_amount', 'offer', 'emi_choice'):
            batch_op.drop_column(name)
