"""the saga engine: run claims, NEEDS_ATTENTION and WATCHING, facts in the history, 64-bit money

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

CHECKOUT_MONEY = ('amount_value', 'authorized_amount', 'captured_amount', 'refunded_amount', 'capture_amount')


def upgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_token', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('claim_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attention_from', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('attention_reason', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('watch_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('late_undo', sa.String(length=16), nullable=True))
        for name in CHECKOUT_MONEY:
            batch_op.alter_column(name, type_=sa.BigInteger(), existing_type=sa.Integer(),
                                  existing_nullable=(name == 'capture_amount'))
    with op.batch_alter_table('transition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fact', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=True))
    with op.batch_alter_table('refund', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_token', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('claim_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('origin', sa.String(length=16), nullable=False, server_default='MERCHANT'))
        batch_op.alter_column('amount_value', type_=sa.BigInteger(), existing_type=sa.Integer(),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('refund', schema=None) as batch_op:
        batch_op.alter_column('amount_value', type_=sa.Integer(), existing_type=sa.BigInteger())
        batch_op.drop_column('origin')
        batch_op.drop_column('claim_until')
        batch_op.drop_column('claim_token')
    with op.batch_alter_table('transition', schema=None) as batch_op:
        batch_op.drop_column('source')
        batch_op.drop_column('fact')
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        for name in CHECKOUT_MONEY:
            batch_op.alter_column(name, type_=sa.Integer(), existing_type=sa.BigInteger())
        for name in ('late_undo', 'watch_until', 'attention_reason', 'attention_from', 'claim_until',
                     'claim_token'):
            batch_op.drop_column(name)
